"""Helpers shared by the model-zoo integration tests (what trains, what keeps its statistics)."""

from __future__ import annotations

import copy

import torch
from torch import nn

import frostline as fl


def frozen_params(model: nn.Module) -> set[str]:
    """Names of the parameters that do not train.

    OpenCLIP turns the affine parameters of the BatchNorms it freezes into buffers of a
    ``FrozenBatchNorm2d``; those count as frozen parameters here, under their original names.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    out = {name for name, p in model.named_parameters() if not p.requires_grad}
    for path, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d) and getattr(module, "affine", True):
            out |= {f"{path}.weight", f"{path}.bias"}
    return out


def fixed_batchnorms(model: nn.Module) -> set[str]:
    """Paths of the BatchNorm modules whose statistics stay fixed after ``model.train()``.

    OpenCLIP swaps them for ``FrozenBatchNorm2d``; frostline keeps the module in eval mode.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    model.train()
    out = set()
    for path, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            out.add(path)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.training:
            out.add(path)
    return out


def assert_lock_parity(model: nn.Module, ks, freeze_bn_stats: bool, lock_theirs, **options) -> None:
    """fl.lock and OpenCLIP's lock freeze the same tensors and fix the same BatchNorms."""
    ours = copy.deepcopy(model)  # re-locked for every k: re-locking must start clean
    reused = None if freeze_bn_stats else copy.deepcopy(model)
    for k in ks:
        if reused is not None:  # only requires_grad changes: reset it instead of copying
            for p in reused.parameters():
                p.requires_grad_(True)
        theirs = reused if reused is not None else copy.deepcopy(model)
        with torch.device(next(model.parameters()).device):  # where FrozenBatchNorm2d is made
            lock_theirs(theirs, k, freeze_bn_stats)
        fl.lock(ours, k, freeze_bn_stats=freeze_bn_stats, **options)
        assert frozen_params(ours) == frozen_params(theirs), k
        assert fixed_batchnorms(ours) == fixed_batchnorms(theirs), k


def assert_tower_parity(tower: nn.Module, ks, freeze_bn_stats: bool) -> None:
    """Parity of ``fl.lock(tower, k)`` with the tower's own ``lock(k)``."""
    assert_lock_parity(tower, ks, freeze_bn_stats,
                        lambda m, k, b: m.lock(unlocked_groups=k, freeze_bn_stats=b))
