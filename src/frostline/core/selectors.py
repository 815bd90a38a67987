"""Selectors: composable predicates over leaves, shared by every backend.

A selector picks leaves by name, path glob, regex, module type, class name, group, kind or any
predicate; selectors combine with ``&``, ``|`` and ``~``. Every selector except a bare predicate
prints as the string syntax of :mod:`frostline.core.parser`, so plans fit in YAML and on a
command line.

Example:
    >>> sel = path("encoder.layer.*") & ~name("bias")
    >>> str(sel)
    '(encoder.layer.* & !name:bias)'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .._errors import SelectorError, closest, shorten, show
from ._patterns import compile_key_glob, compile_path_glob, compile_regex
from .groups import Groups
from .leaves import KINDS, Leaf, TreeView


class MatchContext:
    """What a selector may look at besides the leaf: the whole view and (lazily) the groups."""

    def __init__(self, view: TreeView, groups: Groups | Callable[[], Groups] | None = None):
        self.view = view
        self._groups = groups

    @cached_property
    def groups(self) -> Groups:
        if self._groups is None:
            raise SelectorError(
                "a group selector needs layer groups, but none were given; pass the model "
                "(not a bare tree view) or groups=... explicitly."
            )
        return self._groups() if callable(self._groups) else self._groups


class Selector:
    """Base class: a predicate over leaves. Combine with ``&``, ``|`` and ``~``."""

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        raise NotImplementedError

    def to_string(self) -> str:
        raise NotImplementedError

    def atoms(self) -> Iterator[Selector]:
        """The simple selectors this one is built from."""
        yield self

    def hint(self, ctx: MatchContext) -> str:
        """Why this selector may have matched nothing, and what the user may have meant."""
        return ""

    def select(self, ctx: MatchContext) -> list[bool]:
        return [self.match(leaf, ctx) for leaf in ctx.view]

    def __and__(self, other: Selector | str) -> Selector:
        return And((self, as_selector(other)))

    def __or__(self, other: Selector | str) -> Selector:
        return Or((self, as_selector(other)))

    def __invert__(self) -> Selector:
        return Not(self)

    def __rand__(self, other: Selector | str) -> Selector:
        return And((as_selector(other), self))

    def __ror__(self, other: Selector | str) -> Selector:
        return Or((as_selector(other), self))

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, eq=True)
class Everything(Selector):
    """Matches every leaf."""

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return True

    def to_string(self) -> str:
        return "**"


@dataclass(frozen=True, eq=True)
class Name(Selector):
    """Matches a leaf when any key of its path (a parameter or module name) is one of ``names``.

    Names may hold glob wildcards (``name:*norm*``).
    """

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self._plain is None:
            self._globs  # noqa: B018 - compile eagerly so a bad glob fails where it is written

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        if self._plain:
            return not self._plain.isdisjoint(leaf.path)
        return any(rx.fullmatch(key) for key in leaf.path for rx in self._globs)

    @cached_property
    def _globs(self) -> tuple[Any, ...]:
        return tuple(compile_key_glob(n) for n in self.names)

    @cached_property
    def _plain(self) -> frozenset[str] | None:
        if any(ch in n for n in self.names for ch in "*?["):
            return None
        return frozenset(self.names)

    def to_string(self) -> str:
        return "name:" + _quote_items(self.names)

    def hint(self, ctx: MatchContext) -> str:
        return _did_you_mean(self.names, ctx.view.all_keys, "name:")


@dataclass(frozen=True, eq=True)
class Path(Selector):
    """Matches leaves whose dotted name matches a glob; a glob naming a module takes its subtree.

    ``*`` matches within one segment, ``**`` any number of segments, ``?`` one character,
    ``[seq]`` / ``[!seq]`` one character in / not in ``seq`` (``blocks.1[01]``). A ``/``
    separates segments as ``.`` does, so flat names such as big_vision's
    ``Transformer/encoderblock_0`` select ``Transformer.encoderblock_0``.
    """

    globs: tuple[str, ...]

    def __post_init__(self) -> None:
        self._globs  # noqa: B018 - compile eagerly so a bad glob fails where it is written

    @cached_property
    def _globs(self) -> tuple[Any, ...]:
        return tuple(compile_path_glob(g) for g in self.globs)

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return any(glob.fullmatch(leaf.name) for glob in self._globs)

    def to_string(self) -> str:
        return ",".join(self.globs) if all(_is_bare_glob(g) for g in self.globs) else (
            "path:" + _quote_items(self.globs))

    def hint(self, ctx: MatchContext) -> str:
        # The root's path is "", which would "match" any glob after its literal part.
        candidates = (set(ctx.view.all_module_paths) | set(ctx.view.names)) - {""}
        suggestions = []
        for glob in self.globs:
            literal = re.split(r"[*?\[]", glob, maxsplit=1)[0].rstrip(".")
            rest = glob[len(literal):]
            for found in closest(literal, candidates) if literal else []:
                suggestions.append(found + rest)
        return _format_hint(suggestions)


_BARE_GLOB = re.compile(r"[A-Za-z0-9_*?\-\[\]][A-Za-z0-9_.*?\-\[\]]*")


def _is_bare_glob(glob: str) -> bool:
    return bool(_BARE_GLOB.fullmatch(glob)) and ":" not in glob


@dataclass(frozen=True, eq=True)
class Regex(Selector):
    """Matches leaves whose dotted name contains a match of ``pattern`` (searched with RE2).

    RE2 matches in time linear in the name whatever the pattern; it reads Python's ``re``
    syntax except backreferences and lookaround, which are refused with the reason.
    """

    pattern: str

    @cached_property
    def _compiled(self) -> Any:
        return compile_regex(self.pattern)

    def __post_init__(self) -> None:
        self._compiled  # noqa: B018 - compile eagerly so a bad pattern fails where it is written

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return self._compiled.search(leaf.name) is not None

    def to_string(self) -> str:
        return "re:" + _quote(self.pattern)

    def hint(self, ctx: MatchContext) -> str:
        return "no dotted name contains a match of this regular expression"


@dataclass(frozen=True, eq=True)
class ModuleType(Selector):
    """Matches leaves held (at any depth) by a module that is an instance of ``types``.

    ``types`` may hold classes (``isinstance`` semantics) or strings: a string matches a class or
    any of its bases by name, so no import of the class is needed.
    """

    types: tuple[type | str, ...]

    @cached_property
    def _classes(self) -> tuple[type, ...]:
        return tuple(t for t in self.types if isinstance(t, type))

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(t for t in self.types if isinstance(t, str))

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        for owner in leaf.owners:
            if self._classes and issubclass(owner.cls, self._classes):
                return True
            if self._names and not self._names.isdisjoint(owner.type_names):
                return True
        return False

    def to_string(self) -> str:
        return "type:" + _quote_items(
            [t if isinstance(t, str) else t.__name__ for t in self.types])

    def hint(self, ctx: MatchContext) -> str:
        if not ctx.view.all_classes:
            return _NO_CLASSES
        names = {c.__name__ for cls in ctx.view.all_classes for c in cls.__mro__}
        wanted = [t if isinstance(t, str) else t.__name__ for t in self.types]
        return _did_you_mean(wanted, names, "type:")


_NO_CLASSES = ("this model is a plain pytree (dicts and lists of arrays): its leaves carry no "
               "module classes, so select them by path or name instead (e.g. 'enc.*', "
               "'name:kernel')")


@dataclass(frozen=True, eq=True)
class ClassName(Selector):
    """Matches leaves held (at any depth) by a module whose class is named one of ``names``.

    Exact class names only (no bases); a dotted name is compared with ``module.QualName``.
    """

    names: tuple[str, ...]

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        wanted = frozenset(self.names)
        for owner in leaf.owners:
            if owner.cls.__name__ in wanted:
                return True
            if f"{owner.cls.__module__}.{owner.cls.__qualname__}" in wanted:
                return True
        return False

    def to_string(self) -> str:
        return "class:" + _quote_items(self.names)

    def hint(self, ctx: MatchContext) -> str:
        if not ctx.view.all_classes:
            return _NO_CLASSES
        return _did_you_mean(self.names, {c.__name__ for c in ctx.view.all_classes}, "class:")


@dataclass(frozen=True, eq=True)
class GroupSel(Selector):
    """Matches leaves in a layer group given by index (negative from the head), slice or name."""

    key: int | slice | str

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        index = ctx.groups.index_of(leaf.name)
        return index is not None and index in self._indices(ctx)

    def _indices(self, ctx: MatchContext) -> frozenset[int]:
        cache: dict[object, frozenset[int]] = ctx.__dict__.setdefault("_group_indices", {})
        cache_key = (self.key.start, self.key.stop, self.key.step) if isinstance(
            self.key, slice) else self.key
        if cache_key not in cache:
            cache[cache_key] = frozenset(ctx.groups.indices(self.key))
        return cache[cache_key]

    def to_string(self) -> str:
        key = self.key
        if isinstance(key, slice):
            parts = ["" if v is None else str(v) for v in (key.start, key.stop)]
            text = ":".join(parts) + (f":{key.step}" if key.step is not None else "")
            return f"group:{text}"
        if isinstance(key, int):
            return f"group:{key}"
        if re.fullmatch(r"\s*[+-]?[\d_]+\s*", key) or ":" in key:  # what int() might read
            # A group *named* "2" must not read back as the index 2: quoting marks a name.
            return 'group:"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"group:{_quote(key)}"

    def hint(self, ctx: MatchContext) -> str:
        groups = ctx.groups
        return f"the model has {len(groups)} groups: {', '.join(groups.names)}"

    def __hash__(self) -> int:
        key = self.key
        return hash(("group", (key.start, key.stop, key.step) if isinstance(key, slice) else key))


@dataclass(frozen=True, eq=True)
class Kind(Selector):
    """Matches parameters (``"param"``) or buffers/state (``"buffer"``)."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SelectorError(f"unknown kind {show(self.kind)}: expected one of {KINDS}.")

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return leaf.kind == self.kind

    def to_string(self) -> str:
        return f"kind:{self.kind}"


@dataclass(frozen=True, eq=False)
class Where(Selector):
    """Matches leaves for which ``predicate(leaf)`` is true. Cannot be written as a string."""

    predicate: Callable[[Leaf], bool]
    label: str = field(default="")

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return bool(self.predicate(leaf))

    def to_string(self) -> str:
        name = self.label or getattr(self.predicate, "__name__", "predicate")
        return f"<where {name}>"


@dataclass(frozen=True, eq=True)
class And(Selector):
    parts: tuple[Selector, ...]

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return all(p.match(leaf, ctx) for p in self.parts)

    def to_string(self) -> str:
        return "(" + " & ".join(p.to_string() for p in self.parts) + ")"

    def atoms(self) -> Iterator[Selector]:
        for p in self.parts:
            yield from p.atoms()


@dataclass(frozen=True, eq=True)
class Or(Selector):
    parts: tuple[Selector, ...]

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return any(p.match(leaf, ctx) for p in self.parts)

    def to_string(self) -> str:
        return "(" + " | ".join(p.to_string() for p in self.parts) + ")"

    def atoms(self) -> Iterator[Selector]:
        for p in self.parts:
            yield from p.atoms()


@dataclass(frozen=True, eq=True)
class Not(Selector):
    part: Selector

    def match(self, leaf: Leaf, ctx: MatchContext) -> bool:
        return not self.part.match(leaf, ctx)

    def to_string(self) -> str:
        return "!" + self.part.to_string()

    def atoms(self) -> Iterator[Selector]:
        yield from self.part.atoms()


def _quote(text: str, also: str = "") -> str:
    """``text`` as a selector value: quoted when it holds whitespace, operators, quotes, a
    leading-slash risk, or one of ``also``."""
    if re.fullmatch(r"[^\s&|!()\"'/" + re.escape(also) + "]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_items(items: Iterable[str]) -> str:
    """Comma-separated alternatives, each quoted where needed (a quoted one may hold commas)."""
    return ",".join(_quote(item, ",") for item in items)


def _did_you_mean(wanted: Iterable[str], pool: Iterable[str], prefix: str) -> str:
    pool = list(pool)
    return _format_hint([prefix + c for w in wanted for c in closest(w, pool)])


def _format_hint(suggestions: list[str]) -> str:
    unique = list(dict.fromkeys(suggestions))
    return "closest: " + ", ".join(repr(s) for s in unique) if unique else ""


def explain_empty(selector: Selector, ctx: MatchContext) -> str:
    """Say why ``selector`` matched nothing on this model: which parts are empty, and hints."""
    empty_atoms = [a for a in selector.atoms() if not isinstance(a, Where) and not any(
        a.match(leaf, ctx) for leaf in ctx.view)]
    if not empty_atoms:
        return "each part matches something, but together they match nothing"
    messages = []
    for atom in empty_atoms:
        hint = atom.hint(ctx)
        messages.append(f"{shorten(atom.to_string())} matches nothing"
                        + (f" ({hint})" if hint else ""))
    return "; ".join(messages)


# --- public constructors -------------------------------------------------------------------------


def everything() -> Selector:
    """Select every leaf.

    Example:
        >>> str(everything())
        '**'
    """
    return Everything()


def name(*names: str) -> Selector:
    """Select leaves whose path has a key (parameter or module name) in ``names``.

    Example:
        >>> str(name("bias", "A"))
        'name:bias,A'
    """
    _require_strings("name", names)
    return Name(tuple(names))


def path(*globs: str) -> Selector:
    """Select leaves by dotted-path glob; a glob that names a module selects its whole subtree.

    Example:
        >>> str(path("encoder.layer.*"))
        'encoder.layer.*'
    """
    _require_strings("path", globs)
    if "**" in globs:
        # "**" alone is every leaf; one spelling keeps printed plans equal after re-parsing.
        return Everything()
    return Path(tuple(globs))


def regex(pattern: str) -> Selector:
    """Select leaves whose dotted name contains a match of the regex ``pattern`` (RE2 syntax).

    Example:
        >>> str(regex(r"^blocks\\.1[01]\\."))
        're:^blocks\\\\.1[01]\\\\.'
    """
    _require_strings("regex", (pattern,))
    return Regex(pattern)


def module_type(*types: type | str) -> Selector:
    """Select leaves held by a module of one of ``types`` (classes, or class names as strings).

    Example:
        >>> str(module_type("LayerNorm"))
        'type:LayerNorm'
    """
    if not types or not all(isinstance(t, (type, str)) for t in types):
        raise SelectorError(
            f"module_type expects classes or class names, got {show(types)}; "
            "pass e.g. module_type(torch.nn.LayerNorm) or module_type('LayerNorm')."
        )
    return ModuleType(tuple(types))


def class_name(*names: str) -> Selector:
    """Select leaves held by a module whose exact class name is one of ``names``.

    Example:
        >>> str(class_name("MLP"))
        'class:MLP'
    """
    _require_strings("class_name", names)
    return ClassName(tuple(names))


def group(key: int | slice | str) -> Selector:
    """Select the leaves of one layer group (index, negative from the head), a slice, or a name.

    Example:
        >>> str(group(slice(-2, None)))
        'group:-2:'
        >>> str(group(-2))  # one group: never printed as 'group:-2', easily misread
        'group:-2:-1'
    """
    if not isinstance(key, (int, slice, str)) or isinstance(key, bool):
        raise SelectorError(f"group expects an int, a slice or a group name, got {show(key)}.")
    if isinstance(key, int) and key <= -2:
        # One group counted from the head is the slice [key, key + 1): printed that way, it
        # cannot be read as "the last -key groups" (which is group:key:).
        key = slice(key, key + 1)
    return GroupSel(key)


def kind(which: str) -> Selector:
    """Select parameters (``"param"``) or buffers/state arrays (``"buffer"``).

    Example:
        >>> str(kind("buffer"))
        'kind:buffer'
    """
    return Kind(which)


def where(predicate: Callable[[Leaf], bool], label: str = "") -> Selector:
    """Select leaves for which ``predicate(leaf)`` is true (a :class:`Leaf` has name, shape...).

    Example:
        >>> sel = where(lambda leaf: len(leaf.shape) == 1, "1-d")
        >>> str(sel)
        '<where 1-d>'
    """
    if not callable(predicate):
        raise SelectorError(f"where expects a callable taking a Leaf, got {show(predicate)}.")
    return Where(predicate, label)


def _require_strings(fn: str, values: tuple[Any, ...]) -> None:
    if not values or not all(isinstance(v, str) and v for v in values):
        raise SelectorError(
            f"{fn} expects one or more non-empty strings, got {show(values)}."
        )


def as_selector(value: Selector | str) -> Selector:
    """Turn a selector or a selector string into a selector."""
    if isinstance(value, Selector):
        return value
    if isinstance(value, str):
        from .parser import parse

        return parse(value)
    raise SelectorError(
        f"expected a selector or a selector string, got {type(value).__name__} {show(value)}; "
        "use e.g. 'encoder.layer.*', 'name:bias' or fl.path(...)."
    )
