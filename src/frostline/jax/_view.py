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

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import jax
import numpy as np

from ..core.leaves import BUFFER, PARAM, Leaf, Owner, TreeView
from ._order import key_rank, linen_class_name, split_number
from ._shared import is_placeholder, shared_aliases

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
    """``(key, child)`` pairs one level down: definition order, dict keys by :func:`key_rank`.

    A dict's own order is never read: JAX hands dicts back with sorted keys after ``jit``, an
    optax step or an orbax restore, and the same model must give the same view either way.
    """
    pairs, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    children = [(path[0], child) for path, child in pairs if path]
    if isinstance(node, Mapping):
        children.sort(key=lambda pair: key_rank(key_name(pair[0])))
    return children


@lru_cache(maxsize=None)
def _named_class(name: str) -> type:
    """A stand-in class for a Linen submodule known only by its name (``Dense_3``: Dense)."""
    return type(name, (), {"__module__": "frostline.jax.linen",
                           "__doc__": f"A Flax Linen {name} module, known by its name."})


def _dict_owner_class(key: str, child: Any) -> type | None:
    """Linen params are plain dicts; a submodule's automatic name says its class."""
    if not isinstance(child, Mapping):
        return None
    name = linen_class_name(key)
    return _named_class(name) if name else None


def is_linen_variables(tree: Any) -> bool:
    """True for Flax Linen variables: a dict of collections, ``params`` among others."""
    return (isinstance(tree, Mapping) and "params" in tree and len(tree) > 1
            and all(isinstance(v, Mapping) for v in tree.values()))


def walk(tree: Any) -> Iterator[_Node]:
    """Every node of ``tree`` (interior nodes before their children), with its owner chain."""
    root_owners = () if _is_container(tree) else (Owner("", type(tree)),)
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
            named = _dict_owner_class(keys[-1], child) if isinstance(node.value, Mapping) else None
            if named is not None:
                owners = (*owners, Owner(".".join(keys), named))
            elif not _is_container(child) and not is_array(child) and _has_children(child):
                owners = (*owners, Owner(".".join(keys), type(child)))
            children.append(_Node(keys, child, owners))
        stack.extend(reversed(children))


def _is_container(value: Any) -> bool:
    """Containers hold a model's parts but own nothing (a ``FrozenDict`` is a dict here)."""
    return isinstance(value, (*_CONTAINERS, Mapping))


def _has_children(value: Any) -> bool:
    return bool(_children(value))


def build_view(tree: Any) -> TreeView:
    """The tree view of an Equinox module or a pytree of arrays.

    Two paths that hold the very same array object are reported as tied (``tied_to``), and so
    are the places an ``eqx.nn.Shared`` ties to an array (see :mod:`frostline.jax._shared`). In
    Flax Linen variables (``{"params": ..., "batch_stats": ...}``) only ``params`` holds
    parameters; every other collection is state (kind "buffer"), which never trains.

    Example:
        >>> import jax.numpy as jnp
        >>> view = build_view({"encoder": [{"w": jnp.ones((2, 2))}], "scale": 0.5})
        >>> [leaf.name for leaf in view]
        ['encoder.0.w']
    """
    nodes = list(walk(tree))
    aliases = shared_aliases((".".join(n.keys), n.value) for n in nodes)
    arrays = {".".join(n.keys): n.value for n in nodes if is_array(n.value)}
    found = [n if is_array(n.value) else replace(n, value=arrays[aliases[".".join(n.keys)]])
             for n in nodes if is_array(n.value) or (
                 is_placeholder(n.value) and ".".join(n.keys) in aliases)]
    state_only = is_linen_variables(tree)
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
            kind=BUFFER if state_only and node.keys[0] != "params" else PARAM,
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
    return {".".join(n.keys): _node_class(n) for n in walk(tree)
            if n.keys and not is_array(n.value) and _has_children(n.value)}


def _node_class(node: _Node) -> type:
    """A dict in a family of numbered keys (``encoderblock_3``) is of its family's class, so
    ``Dense_0`` next to ``Block_0..2`` is not taken for a block."""
    if isinstance(node.value, Mapping):
        family, number = split_number(node.keys[-1])
        if number is not None and family:
            return _named_class(linen_class_name(node.keys[-1]) or family)
    return type(node.value)


def dict_paths(tree: Any) -> list[str]:
    """Dotted paths of every dict in ``tree`` (their key order is not the model's order)."""
    return [".".join(n.keys) for n in walk(tree) if isinstance(n.value, Mapping)]


def map_arrays(tree: Any, fn: Callable[[str, Any], Any], other: Any) -> Any:
    """Map every array leaf of ``tree`` to ``fn(dotted_name, leaf)`` and every other leaf to ``other``.

    ``None`` holes (as left by a partition) stay ``None``, so the result mirrors ``tree``. A
    Flax NNX ``Variable`` (as in ``nnx.state(model)``, which ``nnx.Optimizer`` hands optax)
    counts as the array it holds, named by its path in the state.
    """
    def visit(key_path: Any, leaf: Any) -> Any:
        value = leaf.get_value() if _is_variable(leaf) else leaf
        return fn(dotted(key_path), value) if is_array(value) else other

    return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=_is_variable)


def array_names(tree: Any) -> list[str]:
    """Dotted names of the arrays of ``tree`` (``None`` holes have none)."""
    names: list[str] = []
    map_arrays(tree, lambda name, _: names.append(name), None)
    return names


def _is_variable(value: Any) -> bool:
    """True for a Flax NNX ``Variable`` (never imports flax)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(value, nnx.Variable)
