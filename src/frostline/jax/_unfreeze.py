"""Gradual unfreezing in JAX: re-partition a model and carry its optax state across a thaw.

On the partition route the optimizer state has the trainable part's structure: a leaf that
is frozen has ``None`` in every per-leaf state tree (Adam's ``mu`` and ``nu``, momentum
traces). When the plan changes (an :class:`~frostline.UnfreezeSchedule` thaws one more
group), :func:`thaw` splits the model again and :func:`regroup_opt_state` builds the state of
the new trainable part position by position: an array the old state holds at a position that
still holds one is kept as it is (the very same array, so bit-identical), every other position
takes ``tx.init`` of the new trainable part. So

- leaves that were already trainable keep their state;
- newly thawed leaves start fresh (zeros for Adam's moments);
- leaves the new plan freezes again lose their state (their positions hold ``None`` now); if
  they thaw later, they start fresh;
- state that belongs to no leaf (the step ``count`` of ``scale_by_adam`` and of schedules,
  injected hyperparameters) is kept by default: the learning-rate schedule goes on where it was.

optax keeps one step count for the whole tree, where PyTorch's Adam keeps one per parameter.
Keeping it means the newly thawed leaves are bias-corrected as if they had been trained for
``count`` steps: once ``count`` is large their zero moments are barely scaled up, so their
first updates are about ``(1 - b1) / sqrt(1 - b2)`` times the learning rate per element (about
3x for the defaults, reached after a few thousand steps; less before) instead of Adam's usual
``1x`` for a fresh start. ``shared="fresh"`` resets the shared state
instead, which bias-corrects the new leaves like PyTorch does, but over-corrects the older
leaves' moments for the next steps and restarts any schedule; for plain Adam/AdamW near the
start of training the difference is small either way.

The new trainable part has a different structure, so a jitted step compiles once more after
each thaw.
"""

from __future__ import annotations

import sys
from typing import Any

import jax

from .._errors import PlanError
from ..core.groups import Grouping
from ..core.mask import Mask
from ..core.plan import Plan
from ..core.resolve import resolve
from ._mask import trainable_names
from ._models import is_nnx
from ._view import array_names, is_array

SHARED = ("keep", "fresh")


def _nnx_state(tree: Any) -> bool:
    """True for a Flax NNX ``State`` (never imports flax)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(tree, nnx.State)


def _is_hole(value: Any) -> bool:
    """A position without an array: a frozen leaf's ``None``, or ``optax.masked``'s
    ``MaskedNode`` (a leaf another label of ``multi_transform`` owns). Both count as one
    position, so states made for two partitions of one model line up position by position."""
    from optax import MaskedNode

    return value is None or isinstance(value, MaskedNode)


def regroup_opt_state(tx: Any, opt_state: Any, trainable: Any, *, shared: str = "keep") -> Any:
    """The optax state for a new trainable part, keeping what the old state holds for it.

    Works for any optax transformation whose state mirrors the parameter tree (``adamw``,
    ``sgd`` with momentum, ``chain``, ``masked``, ``multi_transform`` and so
    ``fl.layer_decay``, ...).

    Args:
        tx: the optax ``GradientTransformation`` that made ``opt_state``.
        opt_state: its state for the old trainable part (``None`` at frozen leaves).
        trainable: the new trainable part, as :func:`~frostline.partition` gives it.
        shared: ``"keep"`` (default): state that belongs to no leaf (step counts, injected
            hyperparameters) is kept; ``"fresh"``: it is initialised again (see the module
            notes on Adam's bias correction).

    Returns:
        The new state: the old arrays (the same objects) for leaves that were trainable,
        ``tx.init`` values for the newly thawed ones, ``None`` for frozen ones.

    Raises:
        PlanError: ``shared`` is not ``"keep"`` or ``"fresh"``, or ``opt_state`` was not made
            by ``tx`` for a part of this model (its structure or an array's shape differs).

    Example:
        >>> import jax.numpy as jnp, optax, frostline as fl
        >>> params = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> tx = optax.adam(0.1)
        >>> old, _ = fl.partition(params, fl.Plan().freeze("body"))
        >>> state = tx.init(old)
        >>> new, _ = fl.partition(params, fl.Plan())
        >>> fl.regroup_opt_state(tx, state, new)[0].mu["head"]["w"] is state[0].mu["head"]["w"]
        True
    """
    if shared not in SHARED:
        raise PlanError(f"shared must be one of {SHARED}, got {shared!r}.")
    fresh, treedef = jax.tree_util.tree_flatten(tx.init(trainable), is_leaf=_is_hole)
    old, old_treedef = jax.tree_util.tree_flatten(opt_state, is_leaf=_is_hole)
    if treedef != old_treedef and _nnx_state(trainable):
        from ._nnx_thaw import merge_by_path, shared_paths, variable_names

        names = variable_names(trainable)
        return merge_by_path(tx.init(trainable), opt_state,
                             shared_paths(tx, trainable) if shared == "fresh" else frozenset(),
                             names, names | variable_names(opt_state))
    if treedef != old_treedef:
        raise PlanError(
            "the optimizer state does not fit this model: its tree structure differs from "
            f"that of tx.init on the new trainable part ({old_treedef.num_leaves} vs "
            f"{treedef.num_leaves} leaves, None holes counted); pass the state that this same "
            "tx made for a part of this same model."
        )
    if shared == "fresh":
        holes = jax.tree_util.tree_map(lambda _: None, trainable)
        owned = [not is_array(v) for v in jax.tree_util.tree_flatten(
            tx.init(holes), is_leaf=_is_hole)[0]]
    else:
        owned = [True] * len(fresh)
    merged = []
    for index, (new, kept, keep) in enumerate(zip(fresh, old, owned)):
        if keep and is_array(new) and is_array(kept):
            if (new.shape, new.dtype) != (kept.shape, kept.dtype):
                raise PlanError(
                    f"optimizer state array {index} has shape {kept.shape} {kept.dtype}, but "
                    f"this model needs {new.shape} {new.dtype} there; pass the state that "
                    "this same tx made for a part of this same model."
                )
            merged.append(kept)
        else:
            merged.append(new)
    return jax.tree_util.tree_unflatten(treedef, merged)


def thaw(model: Any, plan: Plan | Mask, tx: Any, opt_state: Any = None, *, shared: str = "keep",
         **group_options: Any) -> Any:
    """Re-partition ``model`` by a new plan and carry ``opt_state`` over (gradual unfreezing).

    Call it outside the jitted step whenever the plan changes, e.g. each epoch with
    ``schedule.plan_at(epoch, n_groups)``; with an unchanged plan the state comes back as it
    was. Leaves that stay trainable keep their optimizer state, newly thawed leaves start
    fresh, re-frozen leaves lose theirs (details in :func:`regroup_opt_state`). BatchNorms
    take the mode the new plan gives them (``fl.apply``): a thawed group's statistics train
    again, unless the plan fixes them (``freeze_bn_stats``).

    Labels for ``optax.multi_transform`` (``fl.layer_decay``, ``fl.optax_labels``) must not
    depend on the plan here: build them without one (frozen leaves are ``None`` holes in the
    trainable part and need no label). Labels built with a plan call the leaves it freezes
    ``"frozen"`` (``set_to_zero``), so those leaves would never train after a thaw; a
    ``fl.layer_decay`` transformation built so is refused.

    Flax NNX: ``optimizer = fl.thaw(model, plan, optimizer)`` returns a new ``nnx.Optimizer``
    for the new plan (``wrt=fl.nnx_filter(model, plan)``) holding the old optimizer's state for
    the variables that stay trainable, fresh state for the thawed ones, and its ``step``; see
    :mod:`frostline.jax._nnx_thaw`. Build a new ``nnx.jit`` step or pass the optimizer as an
    argument (it retraces once, as the state changed shape).

    Args:
        model: the whole model, e.g. ``fl.combine(trainable, frozen)`` of the last step (NNX:
            the module; its BatchNorm modes are set in place).
        plan: the new plan (or a ready mask).
        tx: the optax transformation that made ``opt_state`` (NNX: the ``nnx.Optimizer``).
        opt_state: its state for the old trainable part (NNX: not given).
        shared: what happens to state that belongs to no leaf, see :func:`regroup_opt_state`.
        **group_options: passed to ``fl.groups`` (``coarse``, ``spec``, ...).

    Returns:
        ``(trainable, frozen, opt_state)`` for the new plan (NNX: the new ``nnx.Optimizer``).

    Raises:
        PlanError: the plan is not a Plan or Mask, the state does not fit (see
            :func:`regroup_opt_state`), or ``tx`` came from ``fl.layer_decay(..., plan=...)``
            and labels a newly thawed leaf "frozen".

    Example:
        >>> import jax, optax, equinox as eqx, frostline as fl
        >>> model = eqx.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
        >>> schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
        >>> n = len(fl.groups(model))
        >>> tx = optax.adamw(1e-3)
        >>> trainable, frozen = fl.partition(model, schedule.plan_at(0, n))
        >>> opt_state = tx.init(trainable)
        >>> trainable, frozen, opt_state = fl.thaw(
        ...     fl.combine(trainable, frozen), schedule.plan_at(1, n), tx, opt_state)
        >>> trainable.layers[1].weight is None, trainable.layers[0].weight is None
        (False, True)
    """
    from ._backend import BACKEND
    from ._optax import check_labels_fit

    if shared not in SHARED:
        raise PlanError(f"shared must be one of {SHARED}, got {shared!r}.")
    resolved = resolve(model, plan, Grouping(**group_options) if group_options else None)
    model = BACKEND.apply(resolved)
    if is_nnx(model):
        from ._nnx_thaw import thaw_nnx

        names = trainable_names(resolved.view, resolved.mask)
        check_labels_fit(getattr(tx, "tx", None), names)
        return thaw_nnx(model, names, tx, shared)
    trainable, frozen = BACKEND.partition(resolve(model, resolved.mask))
    check_labels_fit(tx, array_names(trainable))
    return trainable, frozen, regroup_opt_state(tx, opt_state, trainable, shared=shared)
