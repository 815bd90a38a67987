"""Layers inside a scanned stack: per-layer update scales along the stacking axis.

Large JAX transformers keep their layers as one stack: ``nn.scan`` (big_vision's
``scan=True``), ``eqx.filter_vmap``-built layers, stacked ``(L, ...)`` parameters. Each parameter
of the stack is one array holding every layer along axis 0, so a plan, a group or a partition
can only take it whole: ``fl.groups`` shows the stack as one piece, and freezing "the bottom 8
layers" cannot be a mask. :func:`stack_scales` does it inside optax instead: it multiplies the
updates of each layer's slice by its own factor, so ``0`` keeps a layer fixed and
``decay ** (L - 1 - i)`` is layer-wise decay. Put it **last** in the chain (after weight decay,
as :func:`~frostline.optax_freeze`). Frozen slices still get gradients and optimizer state (the
arrays are shared with trained layers); unstack the layers where that cost matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._errors import PlanError, SelectorError
from ._models import view_of
from ._view import map_arrays


def stack_scales(model: Any, stack: str, scales: Sequence[float]) -> Any:
    """An optax transformation scaling the updates of layer ``i`` of ``stack`` by ``scales[i]``.

    Args:
        model: the model (or Linen variables) whose parameters the optimizer updates.
        stack: dotted path of the stacked layers (every array under it has the layers on
            axis 0), e.g. ``"params.Transformer.encoderblock"``.
        scales: one factor per layer, input first: ``0`` freezes a layer, ``1`` leaves it.

    Returns:
        An ``optax.GradientTransformation`` (no state) to end an ``optax.chain`` with.

    Raises:
        SelectorError: no array lies under ``stack``.
        PlanError: an array under ``stack`` does not have ``len(scales)`` layers on axis 0.

    Example:
        >>> import jax.numpy as jnp, optax, frostline as fl
        >>> params = {"stack": {"w": jnp.ones((3, 2))}, "head": {"w": jnp.ones(2)}}
        >>> tx = optax.chain(optax.sgd(1.0), fl.stack_scales(params, "stack", [0, 0.5, 1]))
        >>> grads = {"stack": {"w": jnp.ones((3, 2))}, "head": {"w": jnp.ones(2)}}
        >>> tx.update(grads, tx.init(params))[0]["stack"]["w"][:, 0]
        Array([-0. , -0.5, -1. ], dtype=float32)
    """
    import optax

    view = view_of(model)
    members = {leaf.name: leaf.shape for leaf in view
               if leaf.name == stack or leaf.name.startswith(stack + ".")}
    if not members:
        close = sorted({".".join(leaf.path[:n]) for leaf in view for n in range(1, len(leaf.path))
                        if stack.split(".")[-1] in leaf.path[n - 1]})[:3]
        raise SelectorError(
            f"no array lies under '{stack}'; give the dotted path of the stacked layers"
            + (f" (closest: {close})." if close else ".")
        )
    factors = np.asarray(scales, dtype=np.float32)
    wrong = {n: s for n, s in members.items() if not s or s[0] != len(factors)}
    if wrong:
        name, shape = next(iter(wrong.items()))
        raise PlanError(
            f"'{name}' has shape {shape}, but {len(factors)} layer scales were given: every "
            f"array under '{stack}' must hold the layers on axis 0 (shape ({len(factors)}, ...))."
        )

    known = set(view.names)

    def scale(name: str, update: Any) -> Any:
        if name not in known:
            raise PlanError(
                f"the updates hold an array '{name}' that the model the scales were built from "
                f"lacks (it has e.g. {sorted(known)[:3]}); build them from the parameters "
                "you optimize (Linen: variables['params'], with the stack's path inside it)."
            )
        if name not in members:
            return update
        shape = (len(factors),) + (1,) * (update.ndim - 1)
        return update * jnp.asarray(factors.reshape(shape), dtype=update.dtype)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return map_arrays(updates, scale, None), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
