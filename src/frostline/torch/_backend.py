"""The PyTorch backend: tree views, groups and masks for ``torch.nn.Module``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.groups import Groups
from ..core.leaves import PARAM, TreeView
from ..core.mask import Mask
from ._apply import apply_mask
from ._batchnorm import is_batchnorm_module, stats_frozen
from ._groups import torch_groups
from ._view import build_view


class TorchBackend:
    name = "torch"

    def handles(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def view(self, model: nn.Module) -> TreeView:
        return build_view(model)

    def groups(self, model: nn.Module, view: TreeView, **options: Any) -> Groups:
        return torch_groups(model, view, **options)

    def apply(self, model: nn.Module, mask: Mask, plan: Any) -> nn.Module:
        return apply_mask(model, mask, plan)

    def native_mask(self, model: nn.Module, mask: Mask) -> dict[str, bool]:
        kinds = {leaf.name: leaf.kind for leaf in build_view(model)}
        return {name: t for name, t in mask if kinds.get(name) == PARAM}

    def frozen_stats(self, model: nn.Module) -> set[str]:
        return {p for p, m in model.named_modules() if is_batchnorm_module(m) and stats_frozen(m)}


BACKEND = TorchBackend()
