"""Tree view of a ``torch.nn.Module``: parameters and buffers with their owning-module chain."""

from __future__ import annotations

import torch
from torch import nn

from ..core.leaves import BUFFER, PARAM, Leaf, Owner, TreeView
from ._batchnorm import stats_frozen


def build_view(model: nn.Module) -> TreeView:
    """Every parameter and buffer of ``model``, module by module, shared tensors included.

    Names are exactly those of ``named_parameters(remove_duplicate=False)`` /
    ``named_buffers(remove_duplicate=False)``; a module reachable by two paths contributes both.
    Each module's parameters come before its buffers, and a module before its children.

    Example:
        >>> view = build_view(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)))
        >>> [leaf.name for leaf in view][:3]
        ['0.weight', '0.bias', '1.weight']
    """
    module_paths: list[str] = []
    module_classes: list[type] = []
    fixed_stats: set[str] = set()
    raw: list[tuple[str, tuple[str, ...], tuple[Owner, ...], torch.Tensor, str]] = []
    # Depth-first, parents before children, every path of a shared module, as
    # named_modules(remove_duplicate=False) walks; a plain stack avoids its nested generators
    # (a cost per module that grows with depth).
    stack: list[tuple[str, tuple[str, ...], nn.Module, tuple[Owner, ...]]] = [
        ("", (), model, ())]
    while stack:
        path, keys, module, parents = stack.pop()
        chain = (*parents, Owner(path, type(module)))
        module_paths.append(path)
        module_classes.append(type(module))
        if stats_frozen(module):
            fixed_stats.add(path)
        prefix = path + "." if path else ""
        for key, tensor in module._parameters.items():
            if tensor is not None:
                raw.append((prefix + key, (*keys, key), chain, tensor, PARAM))
        for key, tensor in module._buffers.items():
            if tensor is not None:
                raw.append((prefix + key, (*keys, key), chain, tensor, BUFFER))
        children = [(prefix + key, (*keys, key), child, chain)
                    for key, child in module._modules.items() if child is not None]
        stack.extend(reversed(children))
    names_by_tensor: dict[int, list[str]] = {}
    for name, _, _, tensor, _ in raw:
        names_by_tensor.setdefault(id(tensor), []).append(name)
    dtype_names: dict[torch.dtype, str] = {}
    leaves = []
    for index, (name, keys, chain, tensor, kind) in enumerate(raw):
        aliases = names_by_tensor[id(tensor)]
        dtype = tensor.dtype
        if dtype not in dtype_names:
            dtype_names[dtype] = str(dtype).removeprefix("torch.")
        leaves.append(Leaf(
            name=name,
            path=keys,
            owners=chain,
            shape=tuple(tensor.shape),
            dtype=dtype_names[dtype],
            kind=kind,
            trainable=bool(tensor.requires_grad) if kind == PARAM else None,
            tied_to=tuple(a for a in aliases if a != name) if len(aliases) > 1 else (),
            index=index,
        ))
    return TreeView(tuple(leaves), tuple(module_paths), tuple(module_classes),
                    frozenset(fixed_stats))


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by every name it has (shared tensors under each alias)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.named_parameters(remove_duplicate=False):
        out[name] = tensor
    for name, tensor in model.named_buffers(remove_duplicate=False):
        out[name] = tensor
    return out
