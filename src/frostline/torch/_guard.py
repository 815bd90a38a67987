"""The guard: prove that frozen tensors (and frozen BatchNorm statistics) did not move.

A snapshot keeps no copy of the model: one 128-bit fingerprint per watched tensor (see
``_fingerprint``), its dtype and shape, the ``requires_grad`` of every parameter, and the
optimizer when one is given. ``check()`` then reports, in one :class:`GuardError`:

* frozen tensors that moved, with the likely cause: a dtype cast or a rounding through a lower
  precision when the bytes say so, updating statistics for BatchNorms, else a zero gradient
  that weight decay or momentum turned into an update;
* parameters whose ``requires_grad`` changed since the snapshot;
* with ``optimizer=``: frozen parameters the optimizer holds, trainable ones in no param group;
* with ``require_trainable_moved``: trainable parameters that did not move, naming precision
  loss when a low-precision weight has a gradient but rounding swallowed its update.

A snapshot costs 16 bytes per tensor on its device (plus names, dtypes and shapes in Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._errors import GuardError
from ._batchnorm import is_batchnorm_module
from ._diagnose import STATS, frozen_moved_problems, listing, unmoved_problems
from ._fingerprint import device_fingerprints, fingerprint, fingerprints
from ._optimizer_check import optimizer_problems
from ._view import named_tensors

if TYPE_CHECKING:
    from ..core.resolve import Resolved

__all__ = ["Snapshot", "take_snapshot", "fingerprint", "fingerprints", "device_fingerprints"]


@dataclass(frozen=True, repr=False)
class Snapshot:
    """Fingerprints of a model's tensors, taken by :func:`frostline.snapshot`.

    Attributes:
        model: the model the snapshot was taken of (checked by default).
        frozen: names of the watched frozen tensors (frozen parameters, and unless
            ``buffers=False`` the running statistics of BatchNorms whose statistics are fixed or
            whose parameters are all frozen).
        trainable: names of the trainable parameters (checked with ``require_trainable_moved``).
        prints: device -> (names, int64 fingerprints of shape ``(len(names), 2)``).
        layout: name -> (dtype, shape) of every watched tensor.
        requires_grad: ``requires_grad`` of every parameter when the snapshot was taken.
        optimizer: the optimizer whose param groups are checked (None: not checked).
    """

    model: nn.Module
    frozen: tuple[str, ...]
    trainable: tuple[str, ...]
    prints: dict[torch.device, tuple[tuple[str, ...], torch.Tensor]]
    layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    requires_grad: dict[str, bool]
    optimizer: Any = None

    def moved(self, model: nn.Module | None = None) -> set[str]:
        """Names of the snapshotted tensors whose bytes, dtype or shape changed."""
        tensors = self._tensors(model)
        out = {n for n, (dtype, shape) in self.layout.items()
               if (tensors[n].dtype, tuple(tensors[n].shape)) != (dtype, shape)}
        for device, (names, before) in self.prints.items():
            rows = [row for row, n in enumerate(names) if n not in out]
            same = [names[row] for row in rows]
            # Fingerprints differ by device type: compare a moved model on the snapshot's device.
            after = fingerprints([tensors[n].to(device) for n in same])
            changed = (after != before[rows]).any(dim=1).tolist()
            out.update(n for n, c in zip(same, changed) if c)
        return out

    def check(self, model: nn.Module | None = None, *,
              require_trainable_moved: bool = False) -> None:
        """Raise :class:`GuardError` naming every frozen tensor that moved (and why).

        Args:
            model: the model to compare (default: the one the snapshot was taken of).
            require_trainable_moved: also require every trainable parameter to have moved.

        Raises:
            GuardError: a frozen tensor moved, ``requires_grad`` changed, the optimizer holds a
                frozen parameter or misses a trainable one, or (when required) a trainable
                parameter did not move.
        """
        model = model if model is not None else self.model
        tensors = self._tensors(model)
        moved = self.moved(model)
        problems = _drift_problems(self.requires_grad, dict(model.named_parameters()))
        if self.optimizer is not None:
            problems += optimizer_problems(model, self.optimizer, self.frozen, self.trainable)
        problems += frozen_moved_problems([n for n in self.frozen if n in moved], tensors,
                                          self.layout)
        if require_trainable_moved:
            problems += unmoved_problems([n for n in self.trainable if n not in moved], tensors)
        if problems:
            raise GuardError(" ".join(problems))

    def _tensors(self, model: nn.Module | None) -> dict[str, torch.Tensor]:
        tensors = named_tensors(model if model is not None else self.model)
        missing = [n for n in self.layout if n not in tensors]
        if missing:
            raise GuardError(
                f"the model checked lacks {len(missing)} tensors of the snapshot (first: "
                f"'{missing[0]}'); check the model the snapshot was taken of, or one with the "
                "same parameter names."
            )
        return tensors

    def __repr__(self) -> str:
        return f"Snapshot({len(self.frozen)} frozen, {len(self.trainable)} trainable tensors)"

    @property
    def nbytes(self) -> int:
        """Bytes the fingerprints take on the devices."""
        return sum(t.numel() * t.element_size() for _, t in self.prints.values())


def take_snapshot(model: nn.Module, resolved: Resolved, *, buffers: bool = True,
                  optimizer: Any = None) -> Snapshot:
    """Fingerprint the frozen (and trainable) tensors of ``model``.

    Args:
        model: the model (``resolved.model``).
        resolved: which parameters count as frozen (``fl.resolve(model, plan)``; without a plan,
            ``requires_grad`` right now) and which BatchNorms have fixed statistics.
        buffers: watch the running statistics of every BatchNorm whose statistics are fixed or
            whose parameters are all frozen, whether or not frostline fixed those statistics:
            that catches the statistics a ``model.train()`` updates (the classic freezing bug).
            ``False`` watches parameters only.
        optimizer: also check that it holds every trainable parameter and no frozen one, now
            and at ``check()``.

    Returns:
        A :class:`Snapshot`; ``check()`` raises :class:`GuardError` naming what moved.

    Raises:
        GuardError: the optimizer holds a frozen parameter or misses a trainable one.
    """
    params = dict(model.named_parameters())
    trainable = set(resolved.trainable_names()) & set(params)
    frozen_stats = set(resolved.frozen_stats)
    frozen = [n for n in params if n not in trainable]
    if buffers:
        frozen += _watched_stats(model, trainable, frozen_stats)
    trainable_names = tuple(n for n in params if n in trainable)
    if optimizer is not None:
        problems = optimizer_problems(model, optimizer, frozen, trainable_names)
        if problems:
            raise GuardError(" ".join(problems))
    tensors = named_tensors(model)
    watched = [*frozen, *trainable_names]
    by_device: dict[torch.device, list[str]] = {}
    for name in watched:
        by_device.setdefault(tensors[name].device, []).append(name)
    prints = {
        device: (tuple(names), fingerprints([tensors[n] for n in names]))
        for device, names in by_device.items()
    }
    layout = {n: (tensors[n].dtype, tuple(tensors[n].shape)) for n in watched}
    return Snapshot(model, tuple(frozen), trainable_names, prints, layout,
                    {n: p.requires_grad for n, p in params.items()}, optimizer)


def _watched_stats(model: nn.Module, trainable: set[str], frozen_stats: set[str]) -> list[str]:
    """Statistics of BatchNorms whose statistics are fixed or whose parameters are all frozen."""
    out = []
    for path, module in model.named_modules():
        if not is_batchnorm_module(module):
            continue
        prefix = f"{path}." if path else ""
        own = [prefix + key for key, p in module._parameters.items() if p is not None]
        fixed = path in frozen_stats
        if not fixed and (not own or any(n in trainable for n in own)):
            continue
        out += [prefix + key for key, b in module._buffers.items()
                if b is not None and key in STATS]
    return out


def _drift_problems(before: dict[str, bool], params: dict[str, nn.Parameter]) -> list[str]:
    drifted = [n for n, flag in before.items() if n in params and params[n].requires_grad != flag]
    if not drifted:
        return []
    state = {True: "trainable", False: "frozen"}
    return [
        f"{len(drifted)} parameters changed requires_grad since the snapshot: "
        f"{listing(drifted, lambda n: f'{state[before[n]]} -> {state[not before[n]]}')}. The "
        "snapshot proves what was frozen when it was taken: after changing what trains "
        "(fl.lock, fl.apply, an "
        "unfreezing step), take a new snapshot."
    ]
