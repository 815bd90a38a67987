"""Layer groups: an ordered partition of a model's leaves from input (0) to head (n-1).

Groups are plain data computed once by a backend (or given by the user) and reused by locking,
layer-wise decay, unfreezing schedules, reports and the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from .._errors import GroupError, show


@dataclass(frozen=True)
class Group:
    """One layer group.

    Attributes:
        name: readable name ("stem", "layer4.1", "head", ...).
        index: position from the input (0) to the head (n-1).
        leaf_names: dotted names of the parameters and buffers in the group, in model order.
        modules: the smallest set of module paths that holds exactly the group's leaves.
        parameter_names: the parameters among ``leaf_names``, as ``named_parameters()`` prints them.
    """

    name: str
    index: int
    leaf_names: tuple[str, ...]
    modules: tuple[str, ...] = ()
    parameter_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Groups:
    """The ordered layer groups of one model and how they were found.

    Attributes:
        groups: the groups, input first.
        source: where the grouping came from ("timm group_matcher", "auto", "explicit", ...).
        notes: how the grouping was decided, in words (shown by ``frostline inspect``).
        unmatched: leaf names that no grouping rule matched (reported, never hidden).
        scope: path globs of the part of the model the groups describe (e.g. ``("visual",)`` for
            one tower of a CLIP); locking freezes within them only. Empty: the whole model.

    Example:
        >>> g = Groups((Group("stem", 0, ("a",)), Group("head", 1, ("b",))), source="explicit")
        >>> len(g), g[-1].name, g.index_of("a")
        (2, 'head', 0)
    """

    groups: tuple[Group, ...]
    source: str = "explicit"
    notes: tuple[str, ...] = ()
    unmatched: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, key: int | str) -> Group:
        if isinstance(key, str):
            for group in self.groups:
                if group.name == key:
                    return group
            raise GroupError(
                f"no group named {show(key)}; the model's groups are {self.names}. "
                "Use one of those names or an index."
            )
        return self.groups[self.normalize(key)]

    @cached_property
    def names(self) -> list[str]:
        return [group.name for group in self.groups]

    @cached_property
    def _leaf_to_group(self) -> dict[str, int]:
        return {name: group.index for group in self.groups for name in group.leaf_names}

    def index_of(self, leaf_name: str) -> int | None:
        """The group index of a leaf, or None when it is in no group."""
        return self._leaf_to_group.get(leaf_name)

    def normalize(self, index: int) -> int:
        """Turn a possibly negative index into 0..n-1, or raise a GroupError saying the range."""
        n = len(self.groups)
        if not -n <= index < n:
            raise GroupError(
                f"group index {index} is out of range: the model has {n} groups "
                f"({', '.join(self.names)}); use an index from {-n} to {n - 1}."
            )
        return index % n

    def indices(self, key: int | slice | str) -> range | tuple[int, ...]:
        """The group indices an int, slice or name refers to."""
        if isinstance(key, slice):
            return range(len(self.groups))[key]
        if isinstance(key, str):
            return (self[key].index,)
        return (self.normalize(key),)


def minimal_modules(leaf_names: Sequence[str], owner_paths: dict[str, str],
                    module_leaves: dict[str, set[str]]) -> tuple[str, ...]:
    """The highest module paths whose leaves all belong to ``leaf_names``.

    Args:
        leaf_names: the leaves of one group.
        owner_paths: leaf name -> path of the module holding it.
        module_leaves: module path -> every leaf name under it.
    """
    members = set(leaf_names)
    out: dict[str, None] = {}
    for name in leaf_names:
        path = owner_paths.get(name, "")
        best = path
        parts = path.split(".") if path else []
        for cut in range(len(parts) - 1, -1, -1):
            candidate = ".".join(parts[:cut])
            if candidate == "" or not module_leaves.get(candidate, set()) <= members:
                break
            best = candidate
        if best == "" or module_leaves.get(best, set()) - members:
            best = name
        out.setdefault(best, None)
    return tuple(out)
