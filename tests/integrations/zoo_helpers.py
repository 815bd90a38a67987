"""Helpers shared by the model-zoo integration tests (what trains, what keeps its statistics)."""

from __future__ import annotations

from torch import nn


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
