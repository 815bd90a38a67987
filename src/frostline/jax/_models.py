"""What kind of JAX model an object is, and its view, arrays and modules, whatever the kind.

Flax is imported only when a Flax object can exist (``flax`` already imported), so Equinox and
plain pytrees work without it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import jax

from ..core.leaves import TreeView
from ._view import build_view, is_array, node_classes, walk


def is_nnx(model: Any) -> bool:
    """True for a Flax NNX module (never imports flax)."""
    if "flax.nnx" not in sys.modules:
        return False
    from ._nnx import is_nnx as check

    return check(model)


def is_equinox(model: Any) -> bool:
    """True for an Equinox module (never imports equinox)."""
    return "equinox" in sys.modules and isinstance(model, sys.modules["equinox"].Module)


def is_array_tree(model: Any) -> bool:
    """True for an array, or a dict/list/tuple pytree whose leaves are all JAX or NumPy arrays
    (any mapping counts as a dict: Flax's ``FrozenDict`` too)."""
    if is_array(model):
        return True
    if not isinstance(model, (Mapping, list, tuple)):
        return False
    leaves = jax.tree_util.tree_leaves(model)
    return bool(leaves) and all(is_array(leaf) for leaf in leaves)


def split_state(model: Any) -> tuple[Any, Any]:
    """An Equinox ``(model, eqx.nn.State)`` pair apart; anything else is ``(model, None)``."""
    if (isinstance(model, tuple) and len(model) == 2 and type(model[1]).__name__ == "State"
            and type(model[1]).__module__.startswith("equinox")):
        return model
    return model, None


def view_of(model: Any) -> TreeView:
    """The tree view of ``model``.

    Raises:
        BackendError: ``model`` is an Equinox ``(model, state)`` pair, which only the guard
            takes.
    """
    if split_state(model)[1] is not None:
        from .._errors import BackendError

        raise BackendError(
            "a (model, eqx.nn.State) pair is for the guard (fl.snapshot / fl.guard); pass the "
            "model alone here."
        )
    if is_nnx(model):
        from ._nnx import build_nnx_view

        return build_nnx_view(model)
    return build_view(model)


def classes_of(model: Any) -> dict[str, type]:
    if is_nnx(model):
        from ._nnx import nnx_node_classes

        return nnx_node_classes(model)
    return node_classes(model)


def arrays_of(model: Any) -> dict[str, Any]:
    """Every array of ``model`` by dotted name (the live arrays, no copies)."""
    if is_nnx(model):
        from ._nnx import nnx_arrays

        return nnx_arrays(model)
    return {".".join(n.keys): n.value for n in walk(model) if is_array(n.value)}


def modules_of(model: Any) -> dict[str, Any]:
    """Every module (non-container interior node) of ``model`` by dotted path."""
    if is_nnx(model):
        from ._nnx import nnx_modules

        return nnx_modules(model)
    return {".".join(n.keys): n.value for n in walk(model)
            if n.owners and n.owners[-1].path == ".".join(n.keys)}
