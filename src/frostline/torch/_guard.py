"""The guard: prove that frozen tensors (and frozen BatchNorm statistics) did not move.

A snapshot keeps no copy of the model. It keeps a fingerprint of each watched tensor (two
64-bit numbers), computed where the tensor lives, over the tensor's exact bytes:

* on the CPU, CRC-32 and Adler-32 of the raw buffer (``zlib``, no copy for contiguous tensors,
  faster than cloning the tensor). CRC-32 detects every change confined to 32 consecutive bits,
  so any change of a single float32/bf16/fp16 element (one ulp, a sign, a NaN payload) is always
  caught; wider changes escape both checks with a probability near 2**-64.
* on accelerators, the bytes read as integers and reduced twice in int64 on the device, a plain
  sum and a position-weighted sum. Integer sums are exact and independent of summation order, so
  any single-element change always changes the plain sum and swapped elements change the
  weighted one; only two numbers per tensor travel to the host.

A snapshot costs 16 bytes per tensor (plus its name), whatever the tensor's size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._errors import GuardError
from ._batchnorm import is_batchnorm_module
from ._view import named_tensors

if TYPE_CHECKING:
    from ..core.resolve import Resolved

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# Elements per bucket of the accelerator fingerprint (temporaries: about 28 bytes each).
_CHUNK = 1 << 22
_STATS = ("running_mean", "running_var", "num_batches_tracked")


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """Two int64 numbers that change whenever any element of ``tensor`` changes, on its device.

    Example:
        >>> t = torch.ones(3)
        >>> u = t.clone(); u[1] = torch.nextafter(u[1], torch.tensor(2.0))
        >>> bool((fingerprint(t) != fingerprint(u)).any())
        True
    """
    return fingerprints([tensor])[0]


def fingerprints(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fingerprints of tensors on one device, shape ``(len(tensors), 2)``, on that device."""
    if tensors and tensors[0].device.type != "cpu":
        return device_fingerprints(tensors)
    out = []
    for tensor in tensors:
        raw = memoryview(_bits(tensor).contiguous().numpy()).cast("B")
        out.append((zlib.crc32(raw), zlib.adler32(raw)))
    return torch.tensor(out, dtype=torch.int64).reshape(len(out), 2)


def device_fingerprints(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Plain and position-weighted int64 sums of each tensor's bytes, on their device.

    Tensors are cut into pieces of at most ``_CHUNK`` elements, pieces are packed into buckets
    of about ``_CHUNK`` elements, and each bucket is reduced with a handful of kernels (prefix
    sums read at the piece boundaries), so the cost is a few launches per bucket rather than per
    tensor, and the temporaries stay near 28 bytes per bucket element. Sums wrap modulo 2**64.
    """
    device = tensors[0].device
    pieces: list[tuple[int, int, torch.Tensor]] = []
    for index, tensor in enumerate(tensors):
        bits = _bits(tensor)
        if bits.numel() == 0:
            continue
        if bits.numel() <= _CHUNK:
            pieces.append((index, 0, bits))
        else:
            pieces += [(index, start, bits[start:start + _CHUNK])
                       for start in range(0, bits.numel(), _CHUNK)]
    owners, offsets, plain, weighted = [], [], [], []
    bucket: list[tuple[int, int, torch.Tensor]] = []
    size = 0
    for piece in [*pieces, None]:
        if piece is not None and size + piece[2].numel() <= _CHUNK:
            bucket.append(piece)
            size += piece[2].numel()
            continue
        if bucket:
            piece_plain, piece_weighted = _reduce_bucket([view for *_, view in bucket], device)
            plain.append(piece_plain)
            weighted.append(piece_weighted)
            owners += [index for index, _, _ in bucket]
            offsets += [start for _, start, _ in bucket]
        bucket, size = ([piece], piece[2].numel()) if piece is not None else ([], 0)
    out = torch.zeros(len(tensors), 2, dtype=torch.int64, device=device)
    if not owners:
        return out
    owner = torch.tensor(owners, device=device)
    piece_plain = torch.cat(plain)
    # A piece's weights count from 1 within the piece; shift them to the piece's place.
    shifted = torch.cat(weighted) + torch.tensor(offsets, device=device) * piece_plain
    out[:, 0].index_add_(0, owner, piece_plain)
    out[:, 1].index_add_(0, owner, shifted)
    return out


def _reduce_bucket(views: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Per view: sum of its elements and sum of (1-based position in the view) * element.

    Two prefix sums do it without materialising any weights: with ``C`` the prefix sum of the
    elements and ``D`` that of ``C``, a view ``[s, e)`` has ``sum = C[e-1] - C[s-1]`` and
    ``sum((e - g) * x[g]) = D[e-1] - D[s-1] - (e - s) * C[s-1]``; the weights counted from the
    start follow as ``(e - s + 1) * sum`` minus that.
    """
    flat = torch.cat(views).to(torch.int64)
    lengths = torch.tensor([v.numel() for v in views], device=device)
    last = lengths.cumsum(0) - 1
    prefix = flat.cumsum(0)
    at_end = torch.stack([prefix[last], prefix.cumsum(0)[last]])
    before = torch.nn.functional.pad(at_end[:, :-1], (1, 0))
    plain = at_end[0] - before[0]
    from_end = at_end[1] - before[1] - lengths * before[0]
    return plain, (lengths + 1) * plain - from_end


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The elements of ``tensor`` as same-width integers (a view, no copy when contiguous)."""
    data = tensor.detach()
    if data.is_complex():
        data = torch.view_as_real(data.resolve_conj())
    if not data.is_floating_point() and data.dtype in _INT_OF_SIZE.values():
        return data.reshape(-1)
    return data.reshape(-1).view(_INT_OF_SIZE[data.element_size()])


@dataclass(frozen=True, repr=False)
class Snapshot:
    """Fingerprints of a model's tensors, taken by :func:`frostline.snapshot`.

    Attributes:
        model: the model the snapshot was taken of (checked by default).
        frozen: names of the watched frozen tensors (frozen parameters, and with ``buffers=True``
            the running statistics of BatchNorms whose parameters are frozen).
        trainable: names of the trainable parameters (checked with ``require_trainable_moved``).
        prints: device -> (names, int64 fingerprints of shape ``(len(names), 2)``).
    """

    model: nn.Module
    frozen: tuple[str, ...]
    trainable: tuple[str, ...]
    prints: dict[torch.device, tuple[tuple[str, ...], torch.Tensor]]

    def moved(self, model: nn.Module | None = None) -> set[str]:
        """Names of the snapshotted tensors whose fingerprint changed."""
        tensors = named_tensors(model if model is not None else self.model)
        missing = [n for names, _ in self.prints.values() for n in names if n not in tensors]
        if missing:
            raise GuardError(
                f"the model checked lacks {len(missing)} tensors of the snapshot (first: "
                f"'{missing[0]}'); check the model the snapshot was taken of, or one with the "
                "same parameter names."
            )
        out: set[str] = set()
        for device, (names, before) in self.prints.items():
            # Fingerprints differ by device type: compare a moved model on the snapshot's device.
            after = fingerprints([tensors[n].to(device) for n in names])
            changed = (after != before).any(dim=1).tolist()
            out.update(n for n, c in zip(names, changed) if c)
        return out

    def check(self, model: nn.Module | None = None, *,
              require_trainable_moved: bool = False) -> None:
        """Raise :class:`GuardError` naming every frozen tensor that moved.

        Args:
            model: the model to compare (default: the one the snapshot was taken of).
            require_trainable_moved: also require every trainable parameter to have moved.

        Raises:
            GuardError: a frozen tensor moved, or (when required) a trainable one did not.
        """
        moved = self.moved(model)
        frozen_moved = [n for n in self.frozen if n in moved]
        problems = []
        if frozen_moved:
            stats = [n for n in frozen_moved if n.rsplit(".", 1)[-1] in _STATS]
            params = [n for n in frozen_moved if n not in stats]
            if params:
                problems.append(
                    f"{len(params)} frozen parameters moved: {_listing(params)}. A frozen "
                    "parameter moves when it still gets a gradient of zeros instead of None "
                    "(frozen after the optimizer was built): weight decay and momentum keep "
                    "moving it. Build the optimizer from fl.param_groups(model, ...) after "
                    "freezing, or set the frozen parameters' .grad to None."
                )
            if stats:
                problems.append(
                    f"{len(stats)} BatchNorm statistics of frozen BatchNorms moved: "
                    f"{_listing(stats)}. model.train() lets BatchNorm update its running "
                    "statistics even when its parameters are frozen; fix them with "
                    "freeze_bn_stats=True (fl.lock(..., freeze_bn_stats=True) or "
                    "plan.with_bn(freeze_bn_stats=True))."
                )
        if require_trainable_moved:
            still = [n for n in self.trainable if n not in moved]
            if still:
                problems.append(
                    f"{len(still)} trainable parameters did not move: {_listing(still)}. They "
                    "got no gradient or no update: check that they are used in the forward "
                    "pass, that they are in the optimizer, and that their learning rate is "
                    "not zero."
                )
        if problems:
            raise GuardError(" ".join(problems))

    def __repr__(self) -> str:
        return f"Snapshot({len(self.frozen)} frozen, {len(self.trainable)} trainable tensors)"

    @property
    def nbytes(self) -> int:
        """Bytes the fingerprints take on the devices."""
        return sum(t.numel() * t.element_size() for _, t in self.prints.values())


def take_snapshot(model: nn.Module, resolved: Resolved, *, buffers: bool = False) -> Snapshot:
    """Fingerprint the frozen (and trainable) tensors of ``model``.

    Args:
        model: the model (``resolved.model``).
        resolved: which parameters count as frozen (``fl.resolve(model, plan)``; without a plan,
            ``requires_grad`` right now) and which BatchNorms have fixed statistics.
        buffers: also watch the running statistics of every BatchNorm whose parameters are all
            frozen (or that has no parameters and fixed statistics), whether or not frostline
            fixed those statistics: that catches the statistics a ``model.train()`` updates.

    Returns:
        A :class:`Snapshot`; ``check()`` raises :class:`GuardError` naming what moved.
    """
    params = dict(model.named_parameters())
    trainable = set(resolved.trainable_names()) & set(params)
    frozen_stats = set(resolved.frozen_stats)
    frozen = [n for n in params if n not in trainable]
    if buffers:
        frozen += _watched_stats(model, trainable, frozen_stats)
    tensors = named_tensors(model)
    watched = [*frozen, *(n for n in params if n in trainable)]
    by_device: dict[torch.device, list[str]] = {}
    for name in watched:
        by_device.setdefault(tensors[name].device, []).append(name)
    prints = {
        device: (tuple(names), fingerprints([tensors[n] for n in names]))
        for device, names in by_device.items()
    }
    return Snapshot(model, tuple(frozen), tuple(n for n in watched if n in trainable), prints)


def _watched_stats(model: nn.Module, trainable: set[str], frozen_stats: set[str]) -> list[str]:
    out = []
    for path, module in model.named_modules():
        if not is_batchnorm_module(module):
            continue
        prefix = f"{path}." if path else ""
        own = [prefix + key for key, p in module._parameters.items() if p is not None]
        if own and any(n in trainable for n in own):
            continue
        if not own and path not in frozen_stats:
            continue
        out += [prefix + key for key, b in module._buffers.items()
                if b is not None and key in _STATS]
    return out


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
