"""frostline: decide, apply and prove which parameters of a pretrained model train.

Example:
    >>> import torch, frostline as fl
    >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
    >>> plan = fl.Plan().freeze("**").unfreeze("group:-1:").freeze("name:bias")
    >>> _ = fl.apply(net, plan)
    >>> [n for n, p in net.named_parameters() if p.requires_grad]
    ['2.weight']
"""

from __future__ import annotations

import importlib
from typing import Any

from ._api import (
    apply,
    combine,
    explain,
    filter_spec,
    groups,
    guard,
    lock,
    mask,
    partition,
    snapshot,
    summary,
    view,
)
from ._errors import (
    BackendError,
    CheckpointError,
    FrostlineError,
    GroupError,
    GuardError,
    PlanError,
    SelectorError,
    SelectorSyntaxError,
    TiedWeightError,
)
from ._report import Explanation, Summary
from .core.backend import register_backend
from .core.groups import Group, Grouping, Groups
from .core.leaves import Leaf, Owner, TreeView
from .core.mask import Mask
from .core.parser import parse
from .core.plan import Plan, Rule
from .core.recommend import Recommendation, Thresholds, recommend
from .core.resolve import Resolved, resolve
from .core.selectors import (
    Selector,
    class_name,
    everything,
    group,
    kind,
    module_type,
    name,
    path,
    regex,
    where,
)

__version__ = "0.1.0"

# Names that need a framework: imported on first use, so `import frostline` works with torch
# alone, JAX alone, or both.
_LAZY = {
    "trainable_parameters": "frostline.torch",
    "trainable_named_parameters": "frostline.torch",
    "register_group_rule": "frostline.torch",
    "save_trainable": "frostline._checkpoints",
    "load_trainable": "frostline._checkpoints",
    "CheckpointInfo": "frostline.core.checkpoint",
    "Snapshot": "frostline.torch._guard",
    "check_ddp": "frostline.torch._ddp",
    "sweep": "frostline.torch._sweep",
    "Setting": "frostline.torch._sweep",
    "SweepResult": "frostline.torch._sweep",
    "choose": "frostline.torch._sweep",
    "Choice": "frostline.torch._sweep",
    "param_groups": "frostline.torch._param_groups",
    "UnfreezeSchedule": "frostline.core.schedule",
    "Unfreezer": "frostline.torch._unfreeze",
    "extend_scheduler": "frostline.torch._unfreeze",
    "functional_call": "frostline.torch._functional",
    "enable_input_grads": "frostline.torch._input_grads",
    "FrostlineFinetuning": "frostline.integrations.lightning",
    "nnx_filter": "frostline.jax",
    "JaxSnapshot": "frostline.jax",
    "frozen_bn_inference": "frostline.jax",
    "optax_mask": "frostline.jax",
    "optax_labels": "frostline.jax",
    "optax_freeze": "frostline.jax",
    "layer_decay": "frostline.jax",
    "layer_decay_labels": "frostline.jax",
    "thaw": "frostline.jax._unfreeze",
    "stack_scales": "frostline.jax._stack",
    "regroup_opt_state": "frostline.jax._unfreeze",
}


def __getattr__(attr: str) -> Any:
    module = _LAZY.get(attr)
    if module is None:
        raise AttributeError(f"module 'frostline' has no attribute {attr!r}")
    return getattr(importlib.import_module(module), attr)


__all__ = [
    "BackendError",
    "CheckpointError",
    "Explanation",
    "FrostlineError",
    "Group",
    "GroupError",
    "Grouping",
    "Groups",
    "GuardError",
    "Leaf",
    "Mask",
    "Owner",
    "Plan",
    "PlanError",
    "Recommendation",
    "Resolved",
    "Rule",
    "Selector",
    "SelectorError",
    "SelectorSyntaxError",
    "Summary",
    "Thresholds",
    "TiedWeightError",
    "TreeView",
    "apply",
    "class_name",
    "combine",
    "everything",
    "explain",
    "filter_spec",
    "group",
    "groups",
    "guard",
    "kind",
    "lock",
    "mask",
    "module_type",
    "name",
    "parse",
    "partition",
    "path",
    "recommend",
    "regex",
    "register_backend",
    "resolve",
    "snapshot",
    "summary",
    "view",
    "where",
]
# The names in _LAZY need a framework; they are left out of __all__ so that
# `from frostline import *` imports none.
