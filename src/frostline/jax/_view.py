"""Tree views of JAX models: Equinox modules and plain pytrees (dicts, lists, Flax Linen params).

Every array leaf of the pytree becomes a :class:`~frostline.core.leaves.Leaf` whose name joins
the keys of its key path with dots (``GetAttrKey`` -> the attribute, ``SequenceKey`` -> the
index, ``DictKey`` -> the key), so ``model.A.layers[0].weight`` is ``A.layers.0.weight``. Leaves
that are not arrays (activation functions, flags, sizes) never train and are not in the view.
Every node on the way that is not a plain container (an Equinox module or another registered
pytree class) is an :class:`~frostline.core.leaves.Owner`, which the type and class selectors
read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ..core.leaves import PARAM, Leaf, Owner, TreeView

# Containers that hold a model's parts but are not parts themselves: they own nothing.
_CONTAINERS = (dict, list, tuple, type(None))


def is_array(value: Any) -> bool:
    """True for JAX and NumPy arrays (the leaves that may train)."""
    return isinstance(value, (jax.Array, np.ndarray, np.generic))


def key_name(key: Any) -> str:
    """One key of a JAX key path as it appears in a dotted name."""
    for attribute in ("name", "key", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def dotted(key_path: tuple[Any, ...]) -> str:
    """``(GetAttrKey('A'), GetAttrKey('layers'), SequenceKey(0))`` -> ``'A.layers.0'``."""
    return ".".join(key_name(k) for k in key_path)


@dataclass(frozen=True)
class _Node:
    keys: tuple[str, ...]
    value: Any
    owners: tuple[Owner, ...]


def _children(node: Any) -> list[tuple[Any, Any]]:
    """``(key, child)`` pairs one level down, in definition order."""
    pairs, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    children = [(path[0], child) for path, child in pairs if path]
    if isinstance(node, dict):
        # JAX flattens dicts in sorted key order; a model is read in definition order.
        rank = {key: i for i, key in enumerate(node)}
        children.sort(key=lambda pair: rank[pair[0].key])
    return children


def walk(tree: Any) -> Iterator[_Node]:
    """Every node of ``tree`` (interior nodes before their children), with its owner chain."""
    root_owners = () if isinstance(tree, _CONTAINERS) else (Owner("", type(tree)),)
    stack = [_Node((), tree, root_owners)]
    while stack:
        node = stack.pop()
        yield node
        if is_array(node.value):
            continue
        children = []
        for key, child in _children(node.value):
            keys = (*node.keys, key_name(key))
            owners = node.owners
            if not isinstance(child, _CONTAINERS) and not is_array(child) and _has_children(child):
                owners = (*owners, Owner(".".join(keys), type(child)))
            children.append(_Node(keys, child, owners))
        stack.extend(reversed(children))


def _has_children(value: Any) -> bool:
    return bool(_children(value))


def build_view(tree: Any) -> TreeView:
    """The tree view of an Equinox module or a pytree of arrays.

    Two paths that hold the very same array object are reported as tied (``tied_to``).

    Example:
        >>> import jax.numpy as jnp
        >>> view = build_view({"encoder": [{"w": jnp.ones((2, 2))}], "scale": 0.5})
        >>> [leaf.name for leaf in view]
        ['encoder.0.w']
    """
    found = [node for node in walk(tree) if is_array(node.value)]
    names_by_array: dict[int, list[str]] = {}
    for node in found:
        names_by_array.setdefault(id(node.value), []).append(".".join(node.keys))
    leaves = []
    for index, node in enumerate(found):
        name = ".".join(node.keys)
        aliases = names_by_array[id(node.value)]
        leaves.append(Leaf(
            name=name,
            path=node.keys,
            owners=node.owners,
            shape=tuple(np.shape(node.value)),
            dtype=str(node.value.dtype),
            kind=PARAM,
            trainable=True,  # nothing is frozen until a plan says so
            tied_to=tuple(a for a in aliases if a != name) if len(aliases) > 1 else (),
            index=index,
        ))
    return TreeView(tuple(leaves))


def node_classes(tree: Any) -> dict[str, type]:
    """The class of every interior node by dotted path (lists and dicts included).

    Automatic grouping reads it: a list of same-type modules (or of same-type dicts in a plain
    pytree) is a stack of blocks even though the list itself owns nothing.
    """
    return {".".join(n.keys): type(n.value) for n in walk(tree)
            if n.keys and not is_array(n.value) and _has_children(n.value)}


def map_arrays(tree: Any, fn: Callable[[str, Any], Any], other: Any) -> Any:
    """Map every array leaf of ``tree`` to ``fn(dotted_name, leaf)`` and every other leaf to ``other``.

    ``None`` holes (as left by a partition) stay ``None``, so the result mirrors ``tree``.
    """
    return jax.tree_util.tree_map_with_path(
        lambda key_path, leaf: fn(dotted(key_path), leaf) if is_array(leaf) else other, tree)
