"""The PyTorch backend: tree views, groups and masks for ``torch.nn.Module``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._errors import BackendError
from ..core.groups import Grouping, Groups
from ..core.leaves import PARAM, TreeView
from ..core.mask import Mask
from ._apply import apply_mask
from ._functional import combine_parts, partition_module
from ._groups import torch_groups
from ._guard import Snapshot, take_snapshot
from ._view import build_view
from ._wrappers import unwrap

if TYPE_CHECKING:
    from ..core.resolve import Resolved


class TorchBackend:
    name = "torch"

    def handles(self, model: Any) -> bool:
        # Tensors too: ``fl.combine`` dispatches on a value of the dicts ``partition`` made.
        return isinstance(model, (nn.Module, torch.Tensor))

    def unwrap(self, model: Any) -> Any:
        return unwrap(model) if isinstance(model, nn.Module) else model

    def view(self, model: nn.Module) -> TreeView:
        return build_view(_require_module(model))

    def groups(self, model: nn.Module, view: TreeView, grouping: Grouping) -> Groups:
        return torch_groups(model, view, **grouping.options())

    def apply(self, resolved: Resolved) -> nn.Module:
        return apply_mask(resolved.model, resolved.mask, resolved.plan, wrapper=resolved.wrapper)

    def native_mask(self, model: nn.Module, mask: Mask) -> dict[str, bool]:
        kinds = {leaf.name: leaf.kind for leaf in build_view(model)}
        return {name: t for name, t in mask if kinds.get(name) == PARAM}

    def partition(self, resolved: Resolved) -> tuple[
            dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return partition_module(_require_module(resolved.model), resolved.mask)

    def combine(self, trainable: dict[str, Any], frozen: dict[str, Any]) -> dict[str, Any]:
        return combine_parts(trainable, frozen)

    def snapshot(self, resolved: Resolved, *, buffers: bool = True,
                 optimizer: Any = None) -> Snapshot:
        return take_snapshot(_require_module(resolved.model), resolved, buffers=buffers,
                             optimizer=optimizer)


def _require_module(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise BackendError(
            f"expected a torch.nn.Module, got a {type(model).__name__}; pass the model itself "
            "(a bare tensor is accepted only by fl.combine)."
        )
    return model


BACKEND = TorchBackend()
