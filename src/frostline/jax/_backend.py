"""The JAX backend: Equinox modules, Flax NNX modules and plain pytrees of arrays.

JAX models are immutable values, so this backend never pretends to change one: ``apply``
validates the plan against the model and returns the model with its BatchNorm modes set from
the plan (a new Equinox model; NNX modules change in place). The plan takes effect
through what the backend builds from it: a filter spec (``plan.mask(model)``), the
``fl.partition`` halves, optax masks and labels, or an NNX filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import BackendError, GuardError, PlanError
from ..core.groups import Grouping, Groups
from ..core.leaves import TreeView
from ..core.mask import Mask
from ._batchnorm import batchnorms_in_inference, set_bn_modes
from ._groups import jax_groups
from ._guard import JaxSnapshot
from ._mask import trainable_names
from ._models import is_array_tree, is_equinox, is_nnx, split_state, view_of
from ._partition import filter_spec, join, split

if TYPE_CHECKING:
    from ..core.resolve import Resolved


class JaxBackend:
    name = "jax"

    def handles(self, model: Any) -> bool:
        return (is_equinox(model) or is_nnx(model) or is_array_tree(model)
                or split_state(model)[1] is not None)

    def unwrap(self, model: Any) -> Any:
        """The model of an Equinox ``(model, state)`` pair (the guard reads the state too)."""
        return split_state(model)[0]

    def view(self, model: Any) -> TreeView:
        return view_of(model)

    def groups(self, model: Any, view: TreeView, grouping: Grouping) -> Groups:
        return jax_groups(model, view, **grouping.options())

    def apply(self, resolved: Resolved) -> Any:
        """Set the BatchNorm modes from the mask (a new Equinox model; NNX: in place)."""
        return set_bn_modes(resolved.model, resolved.mask)

    def native_mask(self, model: Any, mask: Mask) -> Any:
        """Equinox / pytree: the filter spec. NNX: an :class:`~frostline.jax.NnxFilter`."""
        names = trainable_names(view_of(model), mask)
        if is_nnx(model):
            from ._nnx import NnxFilter

            return NnxFilter(names)
        return filter_spec(model, names)

    def partition(self, resolved: Resolved) -> tuple[Any, Any]:
        model = resolved.model
        if split_state(resolved.wrapper)[1] is not None:
            raise BackendError(
                "a (model, eqx.nn.State) pair is for the guard (fl.snapshot / fl.guard); pass "
                "the model alone here."
            )
        if is_nnx(model):
            raise BackendError(
                "fl.partition splits Equinox modules and pytrees; for a Flax NNX module use its "
                "filter: nnx.split(model, fl.nnx_filter(model, plan), ...), or "
                "nnx.Optimizer(model, tx, wrt=fl.nnx_filter(model, plan))."
            )
        return split(model, trainable_names(resolved.view, resolved.mask))

    def combine(self, trainable: Any, frozen: Any) -> Any:
        return join(trainable, frozen)

    def snapshot(self, resolved: Resolved, *, buffers: bool = True,
                 optimizer: Any = None) -> JaxSnapshot:
        if optimizer is not None:
            raise GuardError(
                "the JAX guard takes no optimizer=: an optax optimizer holds no parameters. Give "
                "it only the trainable half from fl.partition, and the frozen leaves can't move."
            )
        if not resolved.decided:
            raise PlanError(
                "JAX models carry no trainable flags, so the guard needs the plan (or mask) that "
                "says what is frozen: fl.snapshot(model, plan) / fl.guard(model, plan)."
            )
        return JaxSnapshot(resolved.wrapper, resolved.view, resolved.mask, buffers=buffers)

    def frozen_stats(self, model: Any) -> set[str]:
        return batchnorms_in_inference(model)


BACKEND = JaxBackend()
