"""Gradual unfreezing for Flax NNX: a new ``nnx.Optimizer`` for the new plan, old state kept.

``nnx.Optimizer(model, tx, wrt=filter)`` keeps optax state for the variables ``wrt`` selects,
in an ``nnx.State`` that *lacks* the others (where the partition route has ``None`` holes). So
states before and after a thaw differ in structure, and are matched by path instead: an array
of the old state at a path that the new state also has (same optimizer part, same variable)
is kept, with its shape and dtype checked; every other array is ``tx.init``'s. An old array
whose variable the new plan freezes is dropped (a later thaw starts it fresh); any other old
array that finds no place means the state is not this optimizer's, and is refused.

Shared state (optax's step ``count``, injected hyperparameters) is kept by default, and so
is ``optimizer.step``, the number of updates made; ``shared="fresh"`` re-initialises optax's
shared state (``optimizer.step`` keeps counting). The notes of :mod:`frostline.jax._unfreeze`
on Adam's bias correction apply.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import jax
from flax import nnx

from .._errors import PlanError
from ._view import dotted, is_array


def merge_by_path(fresh: Any, old: Any, shared: Set[str], now: Set[str],
                  variables: Set[str]) -> Any:
    """``fresh`` with every array that ``old`` holds at the same path (pure array trees).

    Args:
        fresh: ``tx.init`` of the new trainable state.
        old: the state to carry over.
        shared: paths (``jax.tree_util.keystr``) of state that belongs to no variable and is to
            start fresh (empty unless ``shared="fresh"``).
        now: dotted names of the variables that train now.
        variables: dotted names of every variable of the model.

    Raises:
        PlanError: the old state is not this optimizer's for this model: an array of it finds
            no place (and its variable still trains), a variable that trained before has no
            state in it, or an array's shape or dtype differ.
    """
    def variable_of(path: Any) -> str | None:
        parts = dotted(path).split(".")
        return next((name for cut in range(len(parts))
                     if (name := ".".join(parts[cut:])) in variables), None)

    old_arrays = {jax.tree_util.keystr(path): (path, leaf) for path, leaf
                  in jax.tree_util.tree_flatten_with_path(old)[0] if is_array(leaf)}
    before = {variable_of(path) for path, _ in old_arrays.values()} - {None}
    used: set[str] = set()

    def pick(path: Any, new: Any) -> Any:
        key = jax.tree_util.keystr(path)
        if key in shared or not is_array(new):
            return new
        if key not in old_arrays:
            if variable_of(path) in before:
                raise PlanError(_misfit(key))
            return new
        used.add(key)
        kept = old_arrays[key][1]
        if (kept.shape, kept.dtype) != (new.shape, new.dtype):
            raise PlanError(
                f"optimizer state at {key} has shape {kept.shape} {kept.dtype}, but this model "
                f"needs {new.shape} {new.dtype} there; pass the optimizer made for this model."
            )
        return kept

    merged = jax.tree_util.tree_map_with_path(pick, fresh)
    for key, (path, _) in old_arrays.items():
        owner = variable_of(path)
        if key not in used and key not in shared and (owner is None or owner in now):
            raise PlanError(_misfit(key))
    return merged


def _misfit(key: str) -> str:
    return (f"the optimizer state does not fit this model: {key} has no counterpart in the "
            "state tx.init makes for the new trainable part; pass the optimizer (or state) "
            "that this same tx made for this same model.")


def shared_paths(tx: Any, params: Any) -> frozenset[str]:
    """Paths of the state ``tx`` keeps whatever the parameters (step counts and the like)."""
    holes = jax.tree_util.tree_map(lambda _: None, params)
    return frozenset(jax.tree_util.keystr(path) for path, leaf
                     in jax.tree_util.tree_flatten_with_path(tx.init(holes))[0] if is_array(leaf))


def thaw_nnx(model: nnx.Module, names: frozenset[str], optimizer: Any, shared: str) -> Any:
    """A new ``nnx.Optimizer`` training ``names``, with ``optimizer``'s state carried over."""
    from ._nnx import NnxFilter

    if not isinstance(optimizer, nnx.Optimizer):
        raise PlanError(
            "for a Flax NNX module, fl.thaw takes the nnx.Optimizer: fl.thaw(model, plan, "
            f"optimizer); got {type(optimizer).__name__}."
        )
    tx = optimizer.tx
    new = nnx.Optimizer(model, tx, wrt=NnxFilter(names))
    params = nnx.as_pure(nnx.state(model, new.wrt))
    fresh_shared = shared_paths(tx, params) if shared == "fresh" else frozenset()
    variables = variable_names(nnx.state(model, nnx.Param))
    merged = merge_by_path(nnx.as_pure(new.opt_state), nnx.as_pure(optimizer.opt_state),
                           fresh_shared, names, variables)
    nnx.update(new.opt_state, nnx.state(merged))
    new.step[...] = optimizer.step[...]
    return new


def variable_names(tree: Any) -> frozenset[str]:
    """Dotted names of the variables in every ``nnx.State`` inside ``tree`` (an optimizer
    state holds one per moment), or of ``tree`` itself when it is one."""
    def is_state(x: Any) -> bool:
        return isinstance(x, nnx.State)

    return frozenset(".".join(map(str, path))
                     for state in jax.tree_util.tree_leaves(tree, is_leaf=is_state)
                     if is_state(state) for path, _ in nnx.to_flat_state(state))
