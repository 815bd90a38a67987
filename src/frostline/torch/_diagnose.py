"""Why a frozen tensor moved, or a trainable one did not: the guard's diagnoses.

Each function turns a list of names into sentences for one :class:`GuardError`, choosing the
cause the tensors themselves point to:

* a frozen tensor whose dtype or shape changed was cast or replaced, not trained;
* a frozen floating tensor that moved and whose every value now fits a lower precision exactly
  (bfloat16 or float16; only checked with at least ``_MIN_ROUNDED`` distinct values, so that
  neither a few round values nor an accident, below 2**-100, pass for it) was rounded through
  that precision;
* running statistics move when a BatchNorm runs in training mode;
* any other frozen parameter got an update from a gradient of zeros (weight decay, momentum);
* a trainable low-precision parameter with a non-zero gradient that did not move lost its
  updates to rounding (an update below half the spacing of representable values vanishes).

Example:
    >>> import torch
    >>> w = torch.randn(64).bfloat16().float()
    >>> frozen_moved_problems(["w"], {"w": w}, {"w": (torch.float32, (64,))})[0][:62]
    '1 frozen parameters moved, and every value now fits bfloat16: '
"""

from __future__ import annotations

from collections.abc import Callable

import torch

STATS = ("running_mean", "running_var", "num_batches_tracked")
_LOW = (torch.bfloat16, torch.float16)
_MIN_ROUNDED = 8


def frozen_moved_problems(names: list[str], tensors: dict[str, torch.Tensor],
                          layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[str]:
    """Sentences for the frozen tensors ``names`` that moved, grouped by cause."""
    recast = [n for n in names if (tensors[n].dtype, tuple(tensors[n].shape)) != layout[n]]
    rounded = {n: low for n in names if n not in recast
               for low in [_fits_lower_precision(tensors[n])] if low is not None}
    stats = [n for n in names if n not in recast and n.rsplit(".", 1)[-1] in STATS]
    params = [n for n in names if n not in recast and n not in rounded and n not in stats]
    problems = []
    if recast:
        def change(n: str) -> str:
            dtype, shape = layout[n]
            now = tensors[n]
            if now.dtype != dtype:
                return f"{_short(dtype)} -> {_short(now.dtype)}"
            return f"shape {tuple(shape)} -> {tuple(now.shape)}"
        problems.append(
            f"{len(recast)} frozen tensors changed dtype or shape since the snapshot: "
            f"{listing(recast, change)}. A cast rounds every value (model.to(dtype), .half(), "
            "a mixed-precision wrapper that converts the weights in place): keep the weights "
            "in their dtype and cast activations instead (torch.autocast), or take the "
            "snapshot after the cast."
        )
    if rounded:
        lows = sorted({_short(low) for low in rounded.values()})
        problems.append(
            f"{len(rounded)} frozen parameters moved, and every value now fits "
            f"{' or '.join(lows)}: {listing(list(rounded), lambda n: _short(rounded[n]))}. "
            "They were rounded through the lower precision and back (e.g. "
            "model.to(torch.bfloat16) then .float(), or weights loaded from a low-precision "
            "copy), not trained: keep a full-precision copy of the weights and cast "
            "activations instead (torch.autocast)."
        )
    if params:
        problems.append(
            f"{len(params)} frozen parameters moved: {listing(params)}. A frozen "
            "parameter moves when it still gets a gradient of zeros instead of None "
            "(frozen after the optimizer was built): weight decay and momentum keep "
            "moving it. Build the optimizer from fl.param_groups(model, ...) after "
            "freezing, or set the frozen parameters' .grad to None."
        )
    if stats:
        problems.append(
            f"{len(stats)} BatchNorm statistics of frozen BatchNorms moved: "
            f"{listing(stats)}. model.train() lets BatchNorm update its running "
            "statistics even when its parameters are frozen; fix them with "
            "freeze_bn_stats=True (fl.lock(..., freeze_bn_stats=True) or "
            "plan.with_bn(freeze_bn_stats=True)), or pass buffers=False to the guard if "
            "they are meant to adapt."
        )
    return problems


def unmoved_problems(names: list[str], tensors: dict[str, torch.Tensor]) -> list[str]:
    """Sentences for the trainable parameters ``names`` that did not move."""
    swallowed = [n for n in names if _low_precision_with_gradient(tensors[n])]
    others = [n for n in names if n not in swallowed]
    problems = []
    if swallowed:
        lows = sorted({_short(tensors[n].dtype) for n in swallowed})
        problems.append(
            f"{len(swallowed)} trainable {' and '.join(lows)} parameters did not move "
            f"although their gradient is not zero: {listing(swallowed)}. Precision loss: "
            "every update was smaller than half the spacing of representable values around "
            "the weight, so rounding swallowed it. Keep float32 weights and train under "
            "torch.autocast, or use float32 master weights (or stochastic rounding) in the "
            "optimizer."
        )
    if others:
        problems.append(
            f"{len(others)} trainable parameters did not move: {listing(others)}. They "
            "got no gradient or no update: check that they are used in the forward "
            "pass, that they are in the optimizer, and that their learning rate is "
            "not zero."
        )
    return problems


def listing(names: list[str], note: Callable[[str], str] | None = None, limit: int = 8) -> str:
    """``'a', 'b' (why) and 3 more``: the first ``limit`` names, quoted."""
    shown = ", ".join(f"'{n}'" + (f" ({note(n)})" if note else "") for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _fits_lower_precision(tensor: torch.Tensor) -> torch.dtype | None:
    """The lower precision every value of a float tensor fits exactly, if any.

    Only for tensors of at least ``_MIN_ROUNDED`` distinct values: a few round values (zeros,
    ones, small integers) fit any precision without having been rounded.
    """
    if not tensor.is_floating_point() or tensor.dtype in _LOW:
        return None
    data = tensor.detach()
    if torch.unique(data).numel() < _MIN_ROUNDED:
        return None
    for low in _LOW:
        if torch.equal(data.to(low).to(data.dtype), data):
            return low
    return None


def _low_precision_with_gradient(tensor: torch.Tensor) -> bool:
    grad = tensor.grad
    return tensor.dtype in _LOW and grad is not None and bool(grad.count_nonzero() > 0)


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
