"""JAX backend of frostline: Equinox, Flax NNX and plain pytrees. Never imports torch.

Public names are re-exported from :mod:`frostline`.
"""

from __future__ import annotations

from typing import Any

from ..core.mask import Mask
from ..core.plan import Plan
from ._batchnorm import set_bn_modes
from ._guard import JaxSnapshot
from ._mask import resolve_mask
from ._models import is_nnx
from ._optax import (
    PathLabels,
    layer_decay,
    layer_decay_labels,
    optax_freeze,
    optax_labels,
    optax_mask,
)


def nnx_filter(model: Any, plan: Plan | Mask | None = None, **group_options: Any) -> Any:
    """The trainable parameters of a Flax NNX module under ``plan``, as an NNX filter.

    Pass it as ``nnx.Optimizer(model, tx, wrt=...)`` and to ``nnx.DiffState`` /
    ``nnx.grad(..., argnums=nnx.DiffState(0, ...))``, so frozen parameters get neither
    gradients nor optimizer state.

    Raises:
        BackendError: ``model`` is not a Flax NNX module.

    Example:
        >>> from flax import nnx
        >>> import optax, frostline as fl
        >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)),
        ...                        nnx.Linear(2, 1, rngs=nnx.Rngs(1)))
        >>> wrt = fl.nnx_filter(model, fl.Plan().freeze("layers.0"))
        >>> opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=wrt)
    """
    if not is_nnx(model):
        from .._errors import BackendError

        raise BackendError(
            f"nnx_filter needs a Flax NNX module, got {type(model).__name__}; for Equinox "
            "modules and pytrees use plan.mask(model) or fl.partition(model, plan)."
        )
    from ._backend import BACKEND

    return BACKEND.native_mask(model, resolve_mask(model, plan, **group_options))


def frozen_bn_inference(model: Any, plan: Plan | Mask, **group_options: Any) -> Any:
    """Set every BatchNorm's mode from the plan: inference where it fixes the statistics.

    The BatchNorms with fixed statistics are the mask's ``frozen_stats`` (a plan with
    ``freeze_bn_stats=True``: those whose statistics the rules freeze; ``train_bn`` trains
    their affine parameters and leaves the statistics fixed, as in PyTorch). Every other
    BatchNorm goes back to training mode, so a thawed group's statistics train again.
    ``fl.apply(model, plan)`` does the same.

    Equinox (``eqx.nn.BatchNorm``): returns a new model (``inference`` flags set); the input
    model is unchanged. Flax NNX (``nnx.BatchNorm``): sets ``use_running_average`` in place and
    returns the model; a later ``model.train()`` does not reset the fixed ones.

    Raises:
        BackendError: Flax Linen variables with fixed statistics (Linen takes the mode from
            the call; the message says what to pass).

    Example:
        >>> import jax, equinox as eqx, frostline as fl
        >>> bn, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode="batch")
        >>> fl.frozen_bn_inference(bn, fl.Plan.lock(0, freeze_bn_stats=True)).inference
        True
    """
    return set_bn_modes(model, resolve_mask(model, plan, **group_options))


__all__ = [
    "JaxSnapshot",
    "PathLabels",
    "frozen_bn_inference",
    "layer_decay",
    "layer_decay_labels",
    "nnx_filter",
    "optax_freeze",
    "optax_labels",
    "optax_mask",
]
