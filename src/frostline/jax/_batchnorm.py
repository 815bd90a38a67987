"""BatchNorm modes from a plan: fixed statistics where the plan fixes them, updating elsewhere.

Which BatchNorms keep fixed statistics is decided once, in the core: the mask's
``frozen_stats`` (a plan with ``freeze_bn_stats``; ``train_bn`` leaves it alone, as in PyTorch).
This module only makes the framework follow it, both ways: a BatchNorm listed there is put in
inference mode, every other BatchNorm in training mode (a thawed group's statistics train again).

- Equinox keeps statistics in an ``eqx.nn.State`` outside the model; they stop moving when the
  layer's ``inference`` flag is set. The model is immutable, so a new model is returned.
- Flax NNX keeps them as ``BatchStat`` variables; they stop moving when ``use_running_average``
  is True. The module is changed in place. ``model.train()`` sets ``use_running_average=False``
  on every module that has it; a BatchNorm with fixed statistics ignores that (its class is
  swapped for a subclass whose flag stays True) until a plan thaws it again.
- Flax Linen takes the mode from the call (``use_running_average``, ``mutable``), which no
  variables dict can carry: asking for fixed statistics there raises, saying what to pass.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import Any

import jax

from .._errors import BackendError
from ..core.leaves import Owner
from ..core.mask import Mask
from ..core.norms import is_batchnorm
from ._models import is_nnx, modules_of
from ._view import dotted, is_linen_variables


def in_inference(module: Any) -> bool:
    """True when a BatchNorm module uses (and no longer updates) its running statistics."""
    return bool(getattr(module, "use_running_average", False) or getattr(module, "inference",
                                                                          False))


def batchnorms_in_inference(model: Any) -> set[str]:
    """Paths of the BatchNorms of ``model`` whose statistics are fixed now."""
    return {path for path, module in modules_of(model).items()
            if is_batchnorm(Owner(path, type(module))) and in_inference(module)}


def set_bn_modes(model: Any, mask: Mask) -> Any:
    """Put the BatchNorms in ``mask.frozen_stats`` in inference mode, every other in training.

    Returns a new Equinox model (the input is unchanged); an NNX model is changed in place and
    returned; a pytree without BatchNorm modules comes back as it is.

    Raises:
        BackendError: fixed statistics were asked of Flax Linen variables (the mode is an
            argument of ``apply`` there), or a BatchNorm class has no inference flag.
    """
    fixed = set(mask.frozen_stats)
    if is_nnx(model):
        for path, module in modules_of(model).items():
            if is_batchnorm(Owner(path, type(module))):
                _set_nnx(module, path, path in fixed)
        return model
    if is_linen_variables(model):
        if fixed:
            raise BackendError(_linen_message(sorted(fixed)))
        return model
    def differs(key_path: Any, node: Any) -> bool:
        if not _is_bn(node):
            return False
        path = dotted(key_path)
        _require_flag(node, "inference", path)
        return node.inference != (path in fixed)

    found = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_bn)[0]
    if not any(differs(key_path, node) for key_path, node in found):
        return model  # nothing to change: the very same model

    def swap(key_path: Any, node: Any) -> Any:
        if not differs(key_path, node):
            return node
        import equinox as eqx

        return eqx.tree_at(lambda bn: bn.inference, node, dotted(key_path) in fixed)

    return jax.tree_util.tree_map_with_path(
        swap, model, is_leaf=_is_bn)


def _is_bn(node: Any) -> bool:
    return is_batchnorm(Owner("", type(node)))


def _set_nnx(module: Any, path: str, fixed: bool) -> None:
    _require_flag(module, "use_running_average", path)
    base = getattr(type(module), "_frostline_base", type(module))
    if fixed:
        module.__class__ = _fixed_stats_class(base)
        vars(module)["use_running_average"] = True
    else:
        module.__class__ = base
        module.use_running_average = False


@lru_cache(maxsize=None)
def _fixed_stats_class(cls: type) -> type:
    """``cls`` with a ``use_running_average`` that stays True (``model.train()`` cannot reset it).

    Instances pickle as instances of this class made again from ``cls`` (:func:`_new_fixed`),
    so a pickled model keeps its fixed statistics.
    """
    def reduce_ex(self: Any, protocol: Any) -> Any:
        reduced = super(fixed, self).__reduce_ex__(protocol)
        return (_new_fixed, (cls,), *reduced[2:])

    fixed = type(cls.__name__, (cls,), {
        "use_running_average": property(lambda self: True, lambda self, value: None),
        "_frostline_base": cls,
        "__reduce_ex__": reduce_ex,
        "__module__": cls.__module__,
        "__doc__": f"{cls.__name__} with statistics fixed by a frostline plan.",
    })
    return fixed


def _new_fixed(cls: type) -> Any:
    """A bare instance of ``cls`` with fixed statistics, for unpickling."""
    fixed = _fixed_stats_class(cls)
    return fixed.__new__(fixed)


def stats_fixed_for_good(module: Any) -> bool:
    """True for an NNX BatchNorm whose fixed statistics ``model.train()`` cannot reset."""
    return hasattr(type(module), "_frostline_base")


def _require_flag(module: Any, flag: str, path: str) -> None:
    if not hasattr(module, flag):
        raise BackendError(
            f"the BatchNorm at '{path}' ({type(module).__name__}) has no '{flag}' flag, so its "
            "statistics cannot be fixed; frostline supports eqx.nn.BatchNorm and nnx.BatchNorm."
        )


def _linen_message(paths: Collection[str]) -> str:
    shown = ", ".join(f"'{p}'" for p in list(paths)[:3]) + (", ..." if len(paths) > 3 else "")
    return (
        f"the plan fixes the statistics of {len(paths)} Linen BatchNorms ({shown}), but Linen "
        "takes the BatchNorm mode from the call, not from the variables, so frostline cannot "
        "set it. Build those BatchNorms with use_running_average=True (or pass it at call "
        "time), and keep their entries of 'batch_stats' from before each step (the rest comes "
        "from apply(..., mutable=['batch_stats'])); or use a plan without freeze_bn_stats."
    )
