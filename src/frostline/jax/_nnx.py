"""Flax NNX models: tree views from the module graph, and filters for ``nnx.Optimizer``.

Names are the graph paths joined with dots (``blocks.0.lin.kernel``). ``nnx.Param`` variables
are kind "param"; every other variable (``BatchStat``, RNG state, ...) is kind "buffer". Leaves
come in definition order, as first seen (NNX itself sorts attributes by name, which would put
``head`` before ``stem``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flax import nnx

from ..core.leaves import BUFFER, PARAM, Leaf, Owner, TreeView


def is_nnx(model: Any) -> bool:
    return isinstance(model, nnx.Module)


def _graph(model: nnx.Module) -> dict[tuple[Any, ...], Any]:
    return dict(nnx.iter_graph(model))


# The attribute order of each module when frostline first saw it. NNX transforms (nnx.jit,
# nnx.update) re-assign attributes in sorted order, which would move ``head`` before ``stem``
# and change the groups between two calls.
_FIRST_ORDER: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def _attribute_order(node: Any) -> tuple[Any, ...]:
    current = tuple(node) if isinstance(node, dict) else tuple(vars(node))
    try:
        first = _FIRST_ORDER.setdefault(node, current)
    except TypeError:  # unhashable or not weakly referenceable: use the order it has now
        return current
    return first + tuple(k for k in current if k not in first)


def _definition_rank(nodes: dict[tuple[Any, ...], Any], path: tuple[Any, ...]) -> tuple:
    """Sort key that orders graph paths as the attributes were assigned."""
    rank = []
    for depth, key in enumerate(path):
        if isinstance(key, int):
            rank.append((key, ""))
            continue
        order = _attribute_order(nodes[path[:depth]])
        rank.append((order.index(key) if key in order else len(order), str(key)))
    return tuple(rank)


def _variables(model: nnx.Module) -> tuple[dict[tuple[Any, ...], Any], list[tuple[Any, ...]]]:
    nodes = _graph(model)
    paths = [p for p, node in nodes.items() if isinstance(node, nnx.Variable)
             and hasattr(node.get_value(), "shape")]
    paths.sort(key=lambda p: _definition_rank(nodes, p))
    return nodes, paths


def build_nnx_view(model: nnx.Module) -> TreeView:
    """The tree view of a Flax NNX module.

    Example:
        >>> from flax import nnx
        >>> [leaf.name for leaf in build_nnx_view(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))]
        ['kernel', 'bias']
    """
    nodes, paths = _variables(model)
    leaves = []
    for index, path in enumerate(paths):
        keys = tuple(str(k) for k in path)
        owners = tuple(Owner(".".join(keys[:depth]), type(nodes[path[:depth]]))
                       for depth in range(len(path)) if isinstance(nodes[path[:depth]], nnx.Module))
        variable = nodes[path]
        value = variable.get_value()
        leaves.append(Leaf(
            name=".".join(keys),
            path=keys,
            owners=owners,
            shape=tuple(np.shape(value)),
            dtype=str(value.dtype),
            kind=PARAM if isinstance(variable, nnx.Param) else BUFFER,
            trainable=True if isinstance(variable, nnx.Param) else None,
            index=index,
        ))
    return TreeView(tuple(leaves))


def nnx_node_classes(model: nnx.Module) -> dict[str, type]:
    """The class of every module or container node of the graph, by dotted path."""
    return {".".join(map(str, path)): type(node) for path, node in _graph(model).items()
            if path and isinstance(node, (nnx.Module, dict, list, tuple))}


def nnx_arrays(model: nnx.Module) -> dict[str, Any]:
    """Every variable's array by dotted name (the live arrays, no copies)."""
    nodes, paths = _variables(model)
    return {".".join(map(str, p)): nodes[p].get_value() for p in paths}


def nnx_variables(model: nnx.Module) -> dict[str, Any]:
    """Every array variable (``nnx.Variable``) by dotted name."""
    nodes, paths = _variables(model)
    return {".".join(map(str, p)): nodes[p] for p in paths}


def nnx_modules(model: nnx.Module) -> dict[str, Any]:
    """Every module of the graph by dotted path ("" for the root)."""
    return {".".join(map(str, path)): node for path, node in _graph(model).items()
            if isinstance(node, nnx.Module)}


@dataclass(frozen=True)
class NnxFilter:
    """An NNX filter (``(path, variable) -> bool``) that selects the trainable parameters.

    Usable wherever NNX takes a filter: ``nnx.Optimizer(model, tx, wrt=f)``,
    ``nnx.DiffState(0, f)``, ``nnx.split(model, f, ...)``, ``nnx.state(model, f)``. It is
    hashable, so it can be a static argument of ``nnx.jit``.

    Attributes:
        names: dotted names of the trainable ``nnx.Param`` variables.
    """

    names: frozenset[str]

    def __call__(self, path: Iterable[Any], value: Any) -> bool:
        return isinstance(value, nnx.Param) and ".".join(map(str, path)) in self.names

    def __repr__(self) -> str:
        return f"NnxFilter({len(self.names)} trainable parameters)"
