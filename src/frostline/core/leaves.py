"""Leaves and tree views: the framework-neutral picture of a model's tensors.

A backend turns a model into a :class:`TreeView`, an ordered tuple of :class:`Leaf` values.
Everything above the backends (selectors, groups, plans, reports) works on tree views only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

PARAM = "param"
BUFFER = "buffer"
KINDS = (PARAM, BUFFER)


@dataclass(frozen=True)
class Owner:
    """One module on the chain from the root down to a leaf.

    Attributes:
        path: dotted path of the module ("" for the root).
        cls: the module's class (used by ``module_type``; never imported by the core).
    """

    path: str
    cls: type

    @property
    def class_name(self) -> str:
        return self.cls.__name__

    @cached_property
    def type_names(self) -> frozenset[str]:
        """Names of the class and all its bases, so ``type:LayerNorm`` matches subclasses."""
        return frozenset(c.__name__ for c in self.cls.__mro__)


@dataclass(frozen=True)
class Leaf:
    """One parameter or buffer (state array) of a model.

    Attributes:
        name: dotted name exactly as ``named_parameters()`` (or the pytree key path) prints it.
        path: the same name split into keys.
        owners: modules from the root down to the module that holds the leaf.
        shape: tensor shape.
        dtype: dtype as a string ("float32", "int64", ...).
        kind: "param" (can train) or "buffer" (state: running statistics, counters, masks).
        trainable: whether it trains right now (``requires_grad`` for PyTorch), None if unknown.
        tied_to: other names of the same tensor (shared weights), in view order.
        index: position in the view.
    """

    name: str
    path: tuple[str, ...]
    owners: tuple[Owner, ...]
    shape: tuple[int, ...]
    dtype: str
    kind: str = PARAM
    trainable: bool | None = None
    tied_to: tuple[str, ...] = ()
    index: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def module_path(self) -> str:
        """Dotted path of the module that holds this leaf ("" for the root)."""
        return self.owners[-1].path if self.owners else ""

    @property
    def is_floating(self) -> bool:
        return any(tag in self.dtype for tag in ("float", "bfloat", "complex"))


@dataclass(frozen=True)
class TreeView:
    """The ordered leaves of one model, with lookup by name.

    Aliases of a shared tensor are separate leaves whose ``tied_to`` name each other; the first
    one in view order is the canonical leaf (the one ``named_parameters()`` shows).
    ``frozen_stats`` holds the module paths of the BatchNorms whose statistics are fixed now.

    Example:
        >>> class M: pass
        >>> v = TreeView((Leaf("w", ("w",), (Owner("", M),), (2, 3), "float32"),))
        >>> v["w"].numel, len(v)
        (6, 1)
    """

    leaves: tuple[Leaf, ...]
    module_paths: tuple[str, ...] = field(default=())
    module_classes: tuple[type, ...] = field(default=())
    frozen_stats: frozenset[str] = field(default=frozenset())

    def __iter__(self) -> Iterator[Leaf]:
        return iter(self.leaves)

    def __len__(self) -> int:
        return len(self.leaves)

    def __getitem__(self, name: str) -> Leaf:
        return self.leaves[self._index[name]]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {leaf.name: i for i, leaf in enumerate(self.leaves)}

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(leaf.name for leaf in self.leaves)

    @cached_property
    def canonical(self) -> dict[str, str]:
        """Map every leaf name to the first name of its tensor (itself when not shared)."""
        out: dict[str, str] = {}
        for leaf in self.leaves:
            first = min((leaf.name, *leaf.tied_to), key=self._index.__getitem__)
            out[leaf.name] = first
        return out

    def params(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == PARAM]

    def buffers(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == BUFFER]

    @cached_property
    def all_module_paths(self) -> tuple[str, ...]:
        """Every module path, given by the backend or else derived from the leaves' owners."""
        if self.module_paths:
            return self.module_paths
        seen: dict[str, None] = {}
        for leaf in self.leaves:
            for owner in leaf.owners:
                seen.setdefault(owner.path, None)
        return tuple(seen)

    @cached_property
    def all_classes(self) -> tuple[type, ...]:
        if self.module_classes:
            return self.module_classes
        seen: dict[type, None] = {}
        for leaf in self.leaves:
            for owner in leaf.owners:
                seen.setdefault(owner.cls, None)
        return tuple(seen)

    @cached_property
    def all_keys(self) -> frozenset[str]:
        return frozenset(key for leaf in self.leaves for key in leaf.path)


def unique_numel(leaves: Sequence[Leaf]) -> int:
    """Count elements once per tensor, so shared weights are not counted twice."""
    total = 0
    seen: set[str] = set()
    for leaf in leaves:
        if not leaf.tied_to or seen.isdisjoint(leaf.tied_to):
            total += leaf.numel
        seen.add(leaf.name)
    return total
