"""Loading a classification data set for ``frostline sweep MODEL --data FILE.npz``.

The file is a NumPy ``.npz`` archive (``np.savez``) with four arrays:

* ``x_train``: training inputs, ``(N, ...)``, any numeric dtype (read as float32);
* ``y_train``: training labels, ``(N,)``, integers from 0 to ``classes - 1``;
* ``x_val``, ``y_val``: the same for validation; inputs of the same shape per example.

It is read with ``allow_pickle=False``, so loading never runs code from the file, and every
``.npy`` header is checked against a size limit before anything is allocated.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .._errors import FrostlineError

KEYS = ("x_train", "y_train", "x_val", "y_val")
# The most bytes the four arrays may hold unless the caller allows more (--max-data-mb).
MAX_BYTES = 4 << 30


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


def load_npz(path: str, max_bytes: int = MAX_BYTES) -> ArrayData:
    """Read and check a ``.npz`` classification data set (see the module docstring).

    Every member's ``.npy`` header is read and checked before any array is allocated: the four
    arrays together may hold at most ``max_bytes`` (a header may claim any size, and a
    compressed member may expand a thousandfold), and each header must agree with the size of
    its member.

    Raises:
        DataError: the file cannot be read, a key is missing or is not a ``.npy`` array, an
            array holds objects, a member is corrupt, the arrays exceed ``max_bytes``, shapes
            disagree, or labels are not non-negative integers.

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
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            missing = [key for key in KEYS if f"{key}.npy" not in members]
            if missing:
                raise DataError(
                    f"{path} lacks {', '.join(missing)}: expected an .npz with .npy arrays "
                    f"{', '.join(KEYS)} (found {_names(members)}); write it with "
                    "np.savez(path, x_train=..., y_train=..., x_val=..., y_val=...).")
            headers = {key: _header(archive, members[f"{key}.npy"], path) for key in KEYS}
            total = sum(header.nbytes for header in headers.values())
            if total > max_bytes:
                raise DataError(
                    f"{path}: the arrays hold {total:,} bytes, over the limit of {max_bytes:,} "
                    f"({', '.join(f'{k} {h.describe()}' for k, h in headers.items())}); pass "
                    "--max-data-mb to raise the limit if the file is what you meant.")
            arrays = {key: _array(archive, members[f"{key}.npy"], path) for key in KEYS}
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
            RuntimeError, ValueError) as exc:  # ValueError: e.g. a member name that is not UTF-8
        raise DataError(f"cannot read the data file {path} ({_first_line(exc)}); expected an "
                        ".npz written by np.savez with arrays x_train, y_train, x_val, "
                        "y_val.") from None
    return _checked(path, arrays)


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int

    def describe(self) -> str:
        return f"{self.dtype} {self.shape}"


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> _Header:
    """The ``.npy`` header of one member, checked against the member's size, unallocated."""
    name = info.filename
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy format version {version} is not read here")
        except (ValueError, SyntaxError, TypeError, EOFError) as exc:
            raise DataError(f"{path}: member {name} is not a valid .npy array "
                            f"({_first_line(exc)}); write the file with np.savez.") from None
        header_size = handle.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {name} holds Python objects (dtype {dtype}), which are not "
                        "loaded (no pickles); save numeric arrays only.")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_size + nbytes != info.file_size:
        raise DataError(f"{path}: member {name} is corrupt: its header says {dtype} "
                        f"{shape} ({nbytes:,} bytes of data) but the member holds "
                        f"{max(info.file_size - header_size, 0):,}; write the file again.")
    return _Header(tuple(shape), dtype, nbytes)


def _array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> np.ndarray:
    with archive.open(info) as handle:
        try:
            return np.lib.format.read_array(handle, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: member {info.filename} is corrupt ({_first_line(exc)}); "
                            "write the file again.") from None


def _names(members: dict[str, zipfile.ZipInfo]) -> str:
    names = list(members)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return shown[:200] or "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


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


__all__ = ["KEYS", "MAX_BYTES", "ArrayData", "DataError", "load_npz"]
