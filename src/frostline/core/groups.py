"""Layer groups: an ordered partition of a model's leaves from input (0) to head (n-1).

Groups are plain data computed once by a backend (or given by the user) and reused by locking,
layer-wise decay, unfreezing schedules, reports and the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from .._errors import GroupError, PlanError, show


@dataclass(frozen=True)
class Group:
    """One layer group.

    Attributes:
        name: readable name ("stem", "layer4.1", "head", ...).
        index: position from the input (0) to the head (n-1).
        leaf_names: dotted names of the parameters and buffers in the group, in model order.
        leaf_names: dotted names of the parameters and buffers in the group, in model order,
            each tensor once under the name ``named_parameters()`` / ``named_buffers()`` gives it.
        modules: the smallest set of module paths that holds exactly the group's leaves.
        parameter_names: the parameters among ``leaf_names``, as ``named_parameters()`` prints them.
        aliases: the other names of shared tensors of this group (a module reachable by two
            paths), reported beside the canonical names, never in place of them.
    """

    name: str
    index: int
    leaf_names: tuple[str, ...]
    modules: tuple[str, ...] = ()
    parameter_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


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
        return {name: group.index for group in self.groups
                for name in (*group.leaf_names, *group.aliases)}

    def index_of(self, leaf_name: str) -> int | None:
        """The group index of a leaf (or of an alias of a shared tensor), or None."""
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


_FLAGS = ("coarse", "auto", "head_group")
_NAME_LISTS = ("spec", "names")


@dataclass(frozen=True)
class Grouping:
    """How to build a model's layer groups: one value, carried by plans and passed explicitly.

    Every field defaults to ``None`` ("not set"), so a grouping given when a plan is applied
    can override some fields of the plan's own grouping and keep the others (:meth:`over`).

    Attributes:
        coarse: coarser groups where the model's own grouping offers them (timm).
        auto: ignore the model's own grouping and family rules; detect stem / blocks / head.
        head_group: OpenCLIP timm towers: the projection head as the top group.
        tower: ``"image"`` / ``"text"`` for a CLIP model, or any module path: the groups of that
            part only, named from the root.
        spec: explicit groups, one selector (string or :class:`Selector`) per group, input first.
        names: names for the explicit groups.
        example_input: an input traced (on the meta device) to order automatic groups by
            execution; never stored in a plan file and ignored by ``==``.

    Example:
        >>> g = Grouping(coarse=True).over(Grouping(tower="image", coarse=False))
        >>> g.coarse, g.tower, g.options()
        (True, 'image', {'coarse': True, 'tower': 'image'})
        >>> Grouping.from_dict(g.to_dict()) == g
        True
    """

    coarse: bool | None = None
    auto: bool | None = None
    head_group: bool | None = None
    tower: str | None = None
    spec: tuple[Any, ...] | None = None
    names: tuple[str, ...] | None = None
    example_input: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in _FLAGS:
            value = getattr(self, key)
            if value is not None and type(value) is not bool:
                raise PlanError(f"grouping option {key!r} must be true or false, got {show(value)}.")
        if self.tower is not None and (not isinstance(self.tower, str) or not self.tower):
            raise PlanError(f"grouping option 'tower' must be a module path or 'image'/'text', "
                            f"got {show(self.tower)}.")
        for key in _NAME_LISTS:
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise PlanError(f"grouping option {key!r} must be a list, got {show(value)}.")
            if key == "names" and not all(isinstance(item, str) for item in value):
                raise PlanError(f"grouping option 'names' must be a list of strings, got "
                                f"{show(value)}.")
            object.__setattr__(self, key, tuple(value))

    def over(self, base: Grouping) -> Grouping:
        """This grouping's fields where set, else those of ``base``."""
        merged = {f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                  else getattr(base, f.name) for f in fields(self)}
        return Grouping(**merged)

    def options(self) -> dict[str, Any]:
        """The fields that are set, as keyword arguments for a backend's group builder."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def without_input(self) -> Grouping:
        return replace(self, example_input=None)

    @property
    def is_default(self) -> bool:
        return not self.options()

    def to_dict(self) -> dict[str, Any]:
        """The storable fields (selectors as strings; no example input).

        Raises:
            PlanError: a ``spec`` entry is a Python predicate, which cannot be written to a file.
        """
        out: dict[str, Any] = {}
        for key, value in self.options().items():
            if key == "example_input":
                continue
            if key == "spec":
                value = [_selector_text(item) for item in value]
            elif key == "names":
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grouping:
        """Read the ``groups:`` mapping of a plan file, refusing unknown keys."""
        if not isinstance(data, Mapping):
            raise PlanError(
                f"'groups' must be a mapping of grouping options, got {type(data).__name__}.")
        known = [f.name for f in fields(cls) if f.name != "example_input"]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise PlanError(
                f"unknown grouping option(s) {show(unknown)} for a plan; known: {sorted(known)} "
                "(an example_input cannot be stored: pass it when applying the plan)."
            )
        spec = data.get("spec")
        if spec is not None and (isinstance(spec, str) or not isinstance(spec, (list, tuple))
                                 or not all(isinstance(item, str) for item in spec)):
            raise PlanError(f"grouping option 'spec' must be a list of strings, got {show(spec)}.")
        return cls(**dict(data))


def _selector_text(item: Any) -> str:
    text = item if isinstance(item, str) else item.to_string()
    if text.startswith("<where"):
        raise PlanError(
            f"the group selector {text} is a Python predicate and cannot be written to a file; "
            "express it with the string syntax to save the plan (or pass it when applying)."
        )
    return text
