"""Recognising normalisation layers by class name, so the core needs no framework import."""

from __future__ import annotations

from .leaves import Leaf, Owner

_BATCHNORM_NAMES = frozenset({"_BatchNorm", "BatchNorm", "SyncBatchNorm", "BatchNorm1d",
                              "BatchNorm2d", "BatchNorm3d"})
_NORM_NAMES = _BATCHNORM_NAMES | frozenset({
    "_NormBase", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "_InstanceNorm", "LocalResponseNorm",
})
# PyTorch's running statistics, and Flax's (NNX ``BatchStat`` variables, Linen ``batch_stats``).
STAT_NAMES = frozenset({"running_mean", "running_var", "num_batches_tracked", "mean", "var"})


def is_batchnorm(owner: Owner) -> bool:
    """True for BatchNorm modules of any framework (and subclasses such as timm's BatchNormAct2d)."""
    return not _BATCHNORM_NAMES.isdisjoint(owner.type_names)


def keeps_stats_outside(owner: Owner) -> bool:
    """True for a BatchNorm whose statistics live outside the model (Equinox: an
    ``eqx.nn.State`` reached through its ``*state_index`` fields), so no leaf holds them."""
    fields = getattr(owner.cls, "__dataclass_fields__", ())
    return is_batchnorm(owner) and any(str(f).endswith("state_index") for f in fields)


def is_norm(owner: Owner) -> bool:
    """True for normalisation layers: BatchNorm, LayerNorm, GroupNorm, RMSNorm, InstanceNorm."""
    return not _NORM_NAMES.isdisjoint(owner.type_names) or owner.class_name.endswith("Norm")


def held_by_norm(leaf: Leaf) -> bool:
    """True when the module directly holding ``leaf`` is a normalisation layer."""
    return bool(leaf.owners) and is_norm(leaf.owners[-1])
