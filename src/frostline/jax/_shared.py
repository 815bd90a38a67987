"""Weights tied with ``eqx.nn.Shared``: which placeholder stands for which array.

``eqx.nn.Shared(pytree, where, get)`` stores its pytree with a ``SharedNode`` placeholder at
every place ``where`` selects, and fills it from ``get`` when called. The placeholder is no
array, so a plain view would not see the tied weight at all, and freezing the source
(``Embedding.weight``) would silently freeze the tied use (the output ``Linear.weight``).
:func:`shared_aliases` finds, for every placeholder, the path of the array it stands for, by
calling ``where`` and ``get`` on a copy of the pytree whose leaves are their own paths; the
view then reports the placeholder's path as an alias of that array, as PyTorch ties are.

A ``get`` that computes (``jnp.transpose(...)``) ties no single array: it is reported by
:func:`untraceable`, and the view refuses such a model rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jax

from .._errors import BackendError


@dataclass(frozen=True)
class _Path:
    """A stand-in leaf that knows where it sits."""

    name: str


def is_shared(value: Any) -> bool:
    """True for an ``eqx.nn.Shared`` module (never imports equinox)."""
    return type(value).__name__ == "Shared" and type(value).__module__.startswith("equinox")


def is_placeholder(value: Any) -> bool:
    """True for the ``SharedNode`` that ``eqx.nn.Shared`` leaves at a tied place."""
    return type(value).__name__ == "SharedNode" and type(value).__module__.startswith("equinox")


def shared_aliases(nodes: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """``placeholder path -> source array path`` for every ``eqx.nn.Shared`` among ``nodes``.

    Args:
        nodes: ``(dotted path, value)`` of every node of a model.

    Raises:
        BackendError: a ``get`` computes its value instead of selecting an array.
    """
    from ._view import dotted

    aliases: dict[str, str] = {}
    for path, module in nodes:
        if not is_shared(module):
            continue
        prefix = f"{path}.pytree." if path else "pytree."
        labelled = jax.tree_util.tree_map_with_path(
            lambda key_path, _, prefix=prefix: _Path(prefix + dotted(key_path)), module.pytree)
        try:
            targets = jax.tree_util.tree_leaves(module.where(labelled))
            sources = jax.tree_util.tree_leaves(module.get(labelled))
        except Exception:  # noqa: BLE001 - any failure means `get` computes, see below
            sources = []
            targets = []
        if len(targets) != len(sources) or not all(
                isinstance(x, _Path) for x in (*targets, *sources)) or not targets:
            raise BackendError(
                f"the eqx.nn.Shared at '{path or '<root>'}' fills its tied places with a "
                "computed value, so frostline cannot tell which array they share; make its "
                "`get` return the shared arrays themselves (transpose inside __call__), or "
                "freeze with spec=/selectors that name both places."
            )
        aliases.update({t.name: s.name for t, s in zip(targets, sources)})
    return aliases
