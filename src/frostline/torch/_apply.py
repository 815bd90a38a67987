"""Making a mask true on a PyTorch model: ``requires_grad`` and BatchNorm statistics."""

from __future__ import annotations

from typing import Any

from torch import nn

from .._errors import PlanError
from ..core.mask import Mask
from ._batchnorm import freeze_stats, is_batchnorm_module, stats_frozen, unfreeze_stats

PLAN_ATTRIBUTE = "_frostline_plan"


def apply_mask(model: nn.Module, mask: Mask, plan: Any = None, *,
               wrapper: nn.Module | None = None) -> nn.Module:
    """Set ``requires_grad`` of every parameter from ``mask`` and fix or release BN statistics.

    Parameters that cannot require gradients (integer or quantised dtypes) are left frozen.
    The plan is remembered on the model (for checkpoints and reports).

    Args:
        model: the (inner) model whose names the mask uses.
        mask: what trains.
        plan: the plan the mask came from, remembered on the model.
        wrapper: the module the user holds, when ``model`` is wrapped (compile, DDP, ...).

    Raises:
        PlanError: when the model is wrapped in DistributedDataParallel and the mask would change
            what trains (DDP registers its gradient hooks when it is built).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    _refuse_changes_under_ddp(wrapper if wrapper is not None else model, params, mask)
    for name, trainable in mask:
        param = params.get(name)
        if param is not None and (param.is_floating_point() or param.is_complex()):
            param.requires_grad_(trainable)
    frozen = set(mask.frozen_stats)
    for path, module in model.named_modules():
        if not is_batchnorm_module(module):
            continue
        if path in frozen:
            freeze_stats(module)
        elif stats_frozen(module):
            unfreeze_stats(module, model.training)
    if plan is not None:
        object.__setattr__(model, PLAN_ATTRIBUTE, plan)
    # A torch.compile wrapper needs nothing more: its guards check every parameter's
    # requires_grad, so the next call after a change recompiles (tested after a thaw).
    return wrapper if wrapper is not None else model



def _refuse_changes_under_ddp(model: nn.Module, params: dict[str, nn.Parameter],
                              mask: Mask) -> None:
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return
    changed = [n for n, t in mask if n in params and params[n].requires_grad != t]
    if changed:
        raise PlanError(
            f"the model is already wrapped in DistributedDataParallel, which fixed the set of "
            f"trainable parameters when it was built; this plan would change {len(changed)} of "
            f"them (first: '{changed[0]}'). Apply the plan to the bare model before wrapping it "
            "in DDP (or re-wrap after applying)."
        )
