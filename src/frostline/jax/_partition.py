"""Filter specs, and splitting a JAX model into trainable and frozen parts.

The partition route: split once, outside the jitted step, differentiate the trainable part
only, and put the halves back together inside the step. Frozen leaves then get no gradient and
no optimizer state at all (zeroing full gradients instead still computes them, and weight decay
would still move the frozen leaves).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import jax

from ._view import dotted, is_array, map_arrays


def filter_spec(model: Any, trainable: Set[str]) -> Any:
    """A bool pytree with the model's structure, True = trainable; non-array leaves are False."""
    return map_arrays(model, lambda name, _: name in trainable, False)


def split(model: Any, trainable: Set[str]) -> tuple[Any, Any]:
    """``(trainable, frozen)``: the model with ``None`` where the other part holds the leaf.

    The result equals ``eqx.partition(model, filter_spec(model, trainable))``.
    """
    def keeps(key_path: Any, leaf: Any) -> bool:
        return is_array(leaf) and dotted(key_path) in trainable

    train = jax.tree_util.tree_map_with_path(
        lambda p, leaf: leaf if keeps(p, leaf) else None, model)
    frozen = jax.tree_util.tree_map_with_path(
        lambda p, leaf: None if keeps(p, leaf) else leaf, model)
    return train, frozen


def join(trainable: Any, frozen: Any) -> Any:
    """Put the two parts of :func:`split` back together (``eqx.combine`` for two trees)."""
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, trainable, frozen,
                                  is_leaf=lambda x: x is None)
