"""Fixing BatchNorm running statistics so they stay fixed after ``model.train()``.

The module is kept (timm's ``BatchNormAct2d`` keeps its fused activation, state dicts keep their
keys); it is put in eval mode, its ``train`` is overridden (by a picklable callable, so copies
and pickled models keep it) to keep it there, and a forward pre-hook re-asserts eval mode for
any code that sets ``training`` directly.
"""

from __future__ import annotations

from torch import nn

_MARK = "_frostline_frozen_stats"


def is_batchnorm_module(module: nn.Module) -> bool:
    """True for ``torch.nn`` BatchNorm 1d/2d/3d, SyncBatchNorm and their subclasses."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def stats_frozen(module: nn.Module) -> bool:
    """True when frostline has fixed this module's running statistics."""
    # The mark lives in the instance dict; a lookup there avoids nn.Module.__getattr__'s
    # exception for every module that has none (the tree view asks every module).
    return module.__dict__.get(_MARK) is not None


def frozen_stat_modules(model: nn.Module) -> set[str]:
    """Paths (every path, for modules reachable by two) of the BatchNorms with fixed statistics."""
    return {path for path, module in model.named_modules(remove_duplicate=False)
            if is_batchnorm_module(module) and stats_frozen(module)}


def freeze_stats(module: nn.Module) -> None:
    """Put ``module`` (and its children) in eval mode for good: its statistics stop updating."""
    if stats_frozen(module):
        return
    handle = module.register_forward_pre_hook(_stay_in_eval)
    object.__setattr__(module, _MARK, handle)
    object.__setattr__(module, "train", _TrainInEval(module))
    module.eval()


def unfreeze_stats(module: nn.Module, training: bool) -> None:
    """Undo :func:`freeze_stats`; the module then follows ``train()``/``eval()`` again."""
    handle = getattr(module, _MARK, None)
    if handle is None:
        return
    handle.remove()
    object.__delattr__(module, _MARK)
    if "train" in module.__dict__:
        object.__delattr__(module, "train")
    module.train(training)


class _TrainInEval:
    """Replacement ``train``: frozen statistics keep the module in eval mode whatever ``mode``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        self.module.training = False
        for child in self.module.children():
            child.train(False)
        return self.module


def _stay_in_eval(module: nn.Module, args: object) -> None:
    if module.training:
        _TrainInEval(module)()
