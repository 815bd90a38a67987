"""Loading a classification data set for ``frostline sweep MODEL --data FILE.npz``.

The file is a NumPy ``.npz`` archive (``np.savez``) with four arrays:

* ``x_train``: training inputs, ``(N, ...)``, any numeric dtype (read as float32);
* ``y_train``: training labels, ``(N,)``, integers from 0 to ``classes - 1``;
* ``x_val``, ``y_val``: the same for validation; inputs of the same shape per example.

It is read with ``allow_pickle=False``, so loading never runs code from the file.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .._errors import FrostlineError

KEYS = ("x_train", "y_train", "x_val", "y_val")


class DataError(FrostlineError):
    """A data file for the sweep is missing, unreadable or not a classification data set."""


@dataclass(frozen=True)
class ArrayData:
    """A classification data set as NumPy arrays (inputs float32, labels int64).

    Attributes:
        x_train, y_train, x_val, y_val: the arrays of the file.
        num_classes: the largest label plus one.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def load_npz(path: str) -> ArrayData:
    """Read and check a ``.npz`` classification data set (see the module docstring).

    Raises:
        DataError: the file cannot be read, a key is missing, an array holds objects,
            shapes disagree, or labels are not non-negative integers.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(path, x_train=np.zeros((4, 2)), y_train=np.array([0, 1, 0, 1]),
        ...          x_val=np.zeros((2, 2)), y_val=np.array([1, 0]))
        >>> load_npz(path).num_classes
        2
    """
    try:
        if not os.path.isfile(path):
            raise OSError("no such file")
        if not zipfile.is_zipfile(path):
            raise OSError("not an .npz (zip) archive")
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks {', '.join(missing)}: expected an .npz with arrays "
                    f"{', '.join(KEYS)} (found {', '.join(archive.files) or 'none'}); write it "
                    "with np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...).")
            arrays = {key: archive[key] for key in KEYS}
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path}: an array holds Python objects, which are not loaded (no "
                        f"pickles: {exc}); save numeric arrays only.") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read the data file {path} ({exc}); expected an .npz written "
                        "by np.savez with arrays x_train, y_train, x_val, y_val.") from None
    return _checked(path, arrays)


def _checked(path: str, arrays: dict[str, np.ndarray]) -> ArrayData:
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or x.ndim < 2:
            raise DataError(f"{path}: x_{split} must be a numeric array of shape (N, ...), got "
                            f"dtype {x.dtype} and shape {x.shape}.")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{path}: y_{split} must hold integer class labels, shape (N,), got "
                            f"dtype {y.dtype} and shape {y.shape}; convert with "
                            "y.astype(np.int64) if the values are whole numbers.")
        if len(x) != len(y) or not len(y):
            raise DataError(f"{path}: x_{split} has {len(x)} examples and y_{split} {len(y)}; "
                            "they must be equal and non-zero.")
        if y.min() < 0:
            raise DataError(f"{path}: y_{split} has negative labels (min {y.min()}); labels "
                            "are 0 to classes - 1.")
    if arrays["x_train"].shape[1:] != arrays["x_val"].shape[1:]:
        raise DataError(f"{path}: x_train examples have shape {arrays['x_train'].shape[1:]} but "
                        f"x_val examples {arrays['x_val'].shape[1:]}; they must agree.")
    return ArrayData(
        x_train=arrays["x_train"].astype(np.float32), y_train=arrays["y_train"].astype(np.int64),
        x_val=arrays["x_val"].astype(np.float32), y_val=arrays["y_val"].astype(np.int64),
        num_classes=int(max(arrays["y_train"].max(), arrays["y_val"].max())) + 1,
    )


__all__ = ["KEYS", "ArrayData", "DataError", "load_npz"]
