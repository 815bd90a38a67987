"""Does an optimizer hold exactly the trainable parameters? (the guard's ``optimizer=`` check)

The recurring real failures sit in the optimizer, not in ``requires_grad``: a frozen parameter
left in it (the optimizer was built before freezing) moves as soon as its gradient is a tensor
of zeros, because weight decay and momentum act on it; a parameter thawed after the optimizer
was built is in no param group and never trains. Parameters are matched by identity, the way
the optimizer holds them. The check is strict: :class:`frostline.Unfreezer` keeps re-frozen
parameters in the optimizer on purpose (with no gradient, so their state survives a later
thaw), so guard such a run without ``optimizer=``.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> _ = net.bias.requires_grad_(False)
    >>> optimizer_problems(net, torch.optim.SGD(net.parameters(), lr=0.1), ["bias"],
    ...                    ["weight"])[0][:48]
    "1 frozen parameters are in the optimizer: 'bias'"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .._errors import GuardError
from ._diagnose import listing


def optimizer_problems(model: nn.Module, optimizer: Any, frozen: Iterable[str],
                       trainable: Iterable[str]) -> list[str]:
    """Sentences naming frozen parameters in ``optimizer`` and trainable ones missing from it.

    Raises:
        GuardError: ``optimizer`` has no ``param_groups`` (not a torch optimizer).
    """
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        raise GuardError(
            f"optimizer= expects a torch.optim.Optimizer (an object with param_groups), got a "
            f"{type(optimizer).__name__}; pass the optimizer that trains the model."
        )
    held = {id(p) for group in groups for p in group["params"]}
    params = dict(model.named_parameters())
    inside = [n for n in frozen if n in params and id(params[n]) in held]
    missing = [n for n in trainable if n in params and id(params[n]) not in held]
    problems = []
    if inside:
        problems.append(
            f"{len(inside)} frozen parameters are in the optimizer: {listing(inside)}. An "
            "optimizer steps every parameter whose .grad is a tensor, and a gradient of zeros "
            "(zero_grad(set_to_none=False), or one left from before freezing) lets weight "
            "decay and momentum move it. Build the optimizer after freezing from "
            "fl.param_groups(model, ...) or fl.trainable_parameters(model) (fl.Unfreezer keeps "
            "re-frozen parameters on purpose: guard its runs without optimizer=)."
        )
    if missing:
        problems.append(
            f"{len(missing)} trainable parameters are in no param group of the optimizer: "
            f"{listing(missing)}. They never get an update (typical after unfreezing once the "
            "optimizer exists): add them with optimizer.add_param_group(...), or unfreeze with "
            "fl.Unfreezer, which adds thawed parameters to the optimizer."
        )
    return problems
