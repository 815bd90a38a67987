"""Building layer groups from a tree view: explicit selector lists and automatic detection.

Automatic detection finds the trunk (the longest run of same-type blocks, by parameters held),
puts every leaf that runs before it in a ``stem`` group, each block in its own group, and every
leaf after it in a ``head`` group. A model without repeated blocks gets the order it declares:
the children of a ``Sequential`` (or, with an example input traced, the children of any root in
the order they ran), one group per layer with weights; a child without parameters (an
activation holding no tensor, a BatchNorm without affine parameters) and a normalisation layer
join the group of the layer before them, so ``Sequential(Linear, BatchNorm1d, ReLU, Linear)``
is two groups, ``[Linear + BatchNorm1d]`` and ``[Linear]``. Only when neither applies is the
model one group. It needs only module paths and classes, so every backend shares it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import GroupError, shorten
from .groups import Group, Groups, minimal_modules
from .leaves import PARAM, Leaf, Owner, TreeView
from .norms import is_norm
from .selectors import MatchContext, Selector, as_selector, explain_empty


def build_groups(view: TreeView, members: Sequence[Sequence[str]], names: Sequence[str] | None,
                 source: str, notes: Sequence[str] = (), unmatched: Sequence[str] = (),
                 scope: Sequence[str] = ()) -> Groups:
    """Assemble :class:`Groups` from lists of leaf names, adding aliases and module paths.

    Aliases of a shared tensor join the group of its canonical name (listed in
    ``Group.aliases``, not in ``leaf_names``), so tied weights never straddle two groups.
    Without ``names``, a group holding one module is named after it, else
    "stem" (first), "head" (last) or "group<i>". ``scope``: see :class:`Groups`.
    """
    given: Sequence[str | None] = names if names is not None else [None] * len(members)
    canonical = view.canonical
    by_canonical: dict[str, list[str]] = {}
    for leaf in view:
        by_canonical.setdefault(canonical[leaf.name], []).append(leaf.name)
    owner_paths = {leaf.name: leaf.module_path for leaf in view}
    module_leaves: dict[str, set[str]] = {}
    for leaf in view:
        for owner in leaf.owners:
            module_leaves.setdefault(owner.path, set()).add(leaf.name)
    home = _canonical_homes(members, canonical)
    notes = list(notes)
    out: list[Group] = []
    for index, (leaf_names, group_name) in enumerate(zip(members, given)):
        full: dict[str, None] = {}
        for leaf_name in leaf_names:
            root = canonical.get(leaf_name, leaf_name)
            if home[root] != index:
                continue
            for alias in by_canonical.get(root, [leaf_name]):
                full.setdefault(alias, None)
        if leaf_names and not full:
            notes.append(f"group {group_name or index} held only aliases of tensors shared with "
                         "an earlier group, where they stay; it was dropped")
            continue
        ordered = tuple(sorted(full, key=lambda n: view[n].index if n in view else 0))
        modules = minimal_modules(ordered, owner_paths, module_leaves)
        own = tuple(n for n in ordered if canonical.get(n, n) == n)
        out.append(Group(
            name=group_name or _derived_name(modules, index, len(members)),
            index=len(out),
            leaf_names=own,
            modules=modules,
            parameter_names=tuple(n for n in own if n in view and view[n].kind == PARAM),
            aliases=tuple(n for n in ordered if canonical.get(n, n) != n),
        ))
    return Groups(tuple(out), source=source, notes=tuple(notes), unmatched=tuple(unmatched),
                  scope=tuple(scope))


def _canonical_homes(members: Sequence[Sequence[str]], canonical: Mapping[str, str]
                     ) -> dict[str, int]:
    """The one group of each tensor: where its canonical name is listed, else its first alias.

    Groupings by module (automatic, timm) may list two aliases of a shared tensor in two groups;
    the groups must stay a partition, so every alias follows the canonical name.
    """
    home: dict[str, int] = {}
    for index, names in enumerate(members):
        for name in names:
            if canonical.get(name, name) == name:
                home.setdefault(name, index)
    for index, names in enumerate(members):
        for name in names:
            home.setdefault(canonical.get(name, name), index)
    return home


def _derived_name(modules: Sequence[str], index: int, count: int) -> str:
    if len(modules) == 1:
        return modules[0]
    if index == 0:
        return "stem"
    if index == count - 1:
        return "head"
    return f"group{index}"


def attach_buffers(view: TreeView, param_groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """Put each buffer in the group of the nearest parameter of its module (or before it).

    Groupings such as timm's ``group_matcher`` cover parameters only; a BatchNorm's running
    statistics belong with its affine parameters.
    """
    group_of = {name: g for g, names in enumerate(param_groups) for name in names}
    members = [list(names) for names in param_groups]
    module_group: dict[str, int] = {}
    for leaf in view:
        if leaf.name in group_of:
            module_group.setdefault(leaf.module_path, group_of[leaf.name])
    last = 0
    for leaf in view:
        if leaf.name in group_of:
            last = group_of[leaf.name]
        elif leaf.kind != PARAM and members:
            target = _module_group(leaf, module_group, last)
            members[target].append(leaf.name)
    return members


def _module_group(leaf: Leaf, module_group: Mapping[str, int], fallback: int) -> int:
    for owner in reversed(leaf.owners):
        if owner.path in module_group:
            return module_group[owner.path]
    return fallback


def groups_from_selectors(view: TreeView, selectors: Sequence[Selector | str],
                          names: Sequence[str] | None = None) -> Groups:
    """Explicit groups: the i-th selector defines group i.

    The groups must not overlap: a leaf two selectors match is an error naming both, as are two
    groups with one name (either would silently decide what the other holds).

    Example:
        >>> class M: pass
        >>> from .leaves import Leaf, Owner
        >>> v = TreeView(tuple(Leaf(n, (n,), (Owner("", M),), (1,), "float32", index=i)
        ...                    for i, n in enumerate(["a", "b", "c"])))
        >>> groups_from_selectors(v, ["a|b", "c"]).names
        ['(a | b)', 'c']
    """
    parsed = [as_selector(s) for s in selectors]
    if not parsed:
        raise GroupError("an explicit grouping needs at least one selector.")
    if names is not None and len(names) != len(parsed):
        raise GroupError(f"got {len(names)} group names for {len(parsed)} selectors.")
    group_names = list(names) if names is not None else [str(s) for s in parsed]
    seen: dict[str, int] = {}
    for g, group_name in enumerate(group_names):
        if group_name in seen:
            raise GroupError(
                f"groups {seen[group_name]} and {g} are both named {shorten(group_name)}; "
                "give every group its own name."
            )
        seen[group_name] = g
    ctx = MatchContext(view)
    members: list[list[str]] = [[] for _ in parsed]
    unmatched = []
    hits = [sel.select(ctx) for sel in parsed]
    for g, sel_hits in enumerate(hits):
        if not any(sel_hits):
            raise GroupError(
                f"group {g} ({parsed[g]}) matches nothing: {explain_empty(parsed[g], ctx)}."
            )
    for i, leaf in enumerate(view):
        matched = [g for g in range(len(parsed)) if hits[g][i]]
        if len(matched) > 1:
            first, second = matched[:2]
            raise GroupError(
                f"group selectors {first} ({shorten(str(parsed[first]))}) and {second} "
                f"({shorten(str(parsed[second]))}) both select '{leaf.name}'; groups are "
                "disjoint: narrow one selector (e.g. 'blocks.* & !blocks.0') so each leaf "
                "belongs to one group."
            )
        if matched:
            members[matched[0]].append(leaf.name)
        else:
            unmatched.append(leaf.name)
    note = f"explicit: {len(parsed)} selectors" + (
        f"; {len(unmatched)} leaves matched none and are in no group" if unmatched else "")
    return build_groups(view, members, group_names, "explicit", [note], unmatched)


def groups_from_prefixes(view: TreeView, prefixes: Sequence[Sequence[str]], names: Sequence[str],
                         source: str, notes: Sequence[str] = (),
                         scope: Sequence[str] = ()) -> Groups:
    """Groups given as module or parameter paths: group i holds the leaves under ``prefixes[i]``.

    This is how family rules describe a known architecture. Shared tensors are placed by their
    canonical name only (their aliases follow it); a leaf under no prefix is in no group and is
    listed in ``unmatched`` when it lies inside ``scope``; a group that holds nothing is dropped
    (a module that is absent or an ``Identity`` in this configuration), and the notes say so.

    Example:
        >>> class M: pass
        >>> from .leaves import Leaf, Owner
        >>> v = TreeView(tuple(Leaf(n, tuple(n.split(".")), (Owner("", M),), (1,), "float32",
        ...                         index=i) for i, n in enumerate(["a.w", "b.w", "c"])))
        >>> groups_from_prefixes(v, [["a"], ["b", "c"]], ["first", "last"], "rule").names
        ['first', 'last']
    """
    canonical = view.canonical
    members: list[list[str]] = [[] for _ in prefixes]
    unmatched = []
    for leaf in view:
        if canonical[leaf.name] != leaf.name:
            continue
        for g, group_prefixes in enumerate(prefixes):
            if any(leaf.name == p or leaf.name.startswith(p + ".") for p in group_prefixes):
                members[g].append(leaf.name)
                break
        else:
            if not scope or any(leaf.name == p or leaf.name.startswith(p + ".") for p in scope):
                unmatched.append(leaf.name)
    kept = [g for g, found in enumerate(members) if found]
    notes = list(notes)
    dropped = [names[g] for g in range(len(prefixes)) if g not in kept]
    if dropped:
        notes.append(f"groups holding nothing in this configuration were left out: {dropped}")
    if unmatched:
        notes.append(f"{len(unmatched)} leaves are in no group (the rule does not name them)")
    return build_groups(view, [members[g] for g in kept], [names[g] for g in kept], source,
                        notes, unmatched, scope)


_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict"})


@dataclass(frozen=True)
class _Run:
    parent: str
    children: tuple[str, ...]
    cls_name: str
    numel: int


def auto_groups(view: TreeView, order: Mapping[str, int] | None = None,
                module_classes: Mapping[str, type] | None = None) -> Groups:
    """Automatic groups: stem, one group per block of the trunk, head.

    Args:
        view: the model's tree view.
        order: optional execution rank per module path (from tracing an example input); leaves
            are then ordered by when their module first ran instead of by definition.
        module_classes: class of every module path (defaults to the classes seen in owners).
    """
    classes = dict(module_classes or {})
    for leaf in view:
        for owner in leaf.owners:
            classes.setdefault(owner.path, owner.cls)
    leaves = _ordered_leaves(view, order)
    numel = _subtree_numel(leaves)
    run = _best_run(leaves, classes, numel)
    if run is None:
        declared = _declared_groups(leaves, classes, traced=bool(order))
        if declared is not None:
            members, where = declared
            return build_groups(view, members, None, "auto", [
                f"auto: no repeated blocks; {len(members)} groups in the order {where} "
                "(normalisation and parameterless layers join the layer before them)"])
        every = [leaf.name for leaf in leaves]
        return build_groups(view, [every], ["all"], "auto", [f"auto: {_ONE_GROUP}"])
    block_members: dict[str, list[str]] = {child: [] for child in run.children}
    stem, head = [], []
    first_block_seen = False
    depth = len(run.parent.split(".")) + 1 if run.parent else 1
    blocks = set(run.children)
    for leaf in leaves:
        key = ".".join(leaf.path[:depth])
        block = key if key in blocks and len(leaf.path) > depth else None
        if block is not None:
            block_members[block].append(leaf.name)
            first_block_seen = True
        elif first_block_seen:
            head.append(leaf.name)
        else:
            stem.append(leaf.name)
    members, names = [], []
    if stem:
        members.append(stem)
        names.append("stem")
    for child in run.children:
        members.append(block_members[child])
        names.append(child)
    if head:
        members.append(head)
        names.append("head")
    where = run.parent or "the root"
    notes = [
        f"auto: trunk is {len(run.children)} x {run.cls_name} under {where}",
        f"auto: stem holds {len(stem)} leaves before the trunk, head {len(head)} after it",
        "auto: order from " + ("tracing the example input" if order else "definition order"),
    ]
    return build_groups(view, members, names, "auto", notes)


_ONE_GROUP = "no repeated blocks and no declared layer order; the whole model is one group"
_ORDERED = frozenset({"Sequential"})


def _declared_groups(leaves: Sequence[Leaf], classes: Mapping[str, type], traced: bool
                     ) -> tuple[list[list[str]], str] | None:
    """One group per child of the model's ordered container (see the module docstring).

    The container is the root, or the module reached from it through children that are alone
    in their parent; it must be a ``Sequential`` unless ``traced`` (execution order is known).
    Returns the groups' leaf names and where the order came from, or None (fewer than 2 groups).
    """
    depth, parent = 0, ""
    while True:
        units = _units(leaves, depth)
        if len(units) != 1 or all(len(leaf.path) <= depth + 1 for leaf in leaves):
            break
        parent = next(iter(units))
        depth += 1
    cls = classes.get(parent)
    if not traced and (cls is None or cls.__name__ not in _ORDERED):
        return None
    members: list[list[str]] = []
    pending: list[str] = []
    for key, unit in units.items():
        names = [leaf.name for leaf in unit]
        if len(unit[0].path) == depth + 1:  # a tensor of the container itself, not a child
            pending += names
            continue
        joins_before = is_norm(Owner(key, classes[key])) or all(
            leaf.kind != PARAM for leaf in unit)
        if joins_before and members:
            members[-1] += names
        elif joins_before:
            pending += names
        else:
            members.append(pending + names)
            pending = []
    if members:
        members[-1] += pending
    if len(members) < 2:
        return None
    if traced or cls is None:
        return members, "they ran (traced)"
    return members, f"the {cls.__name__} '{parent or '<root>'}' declares"


def _units(leaves: Sequence[Leaf], depth: int) -> dict[str, list[Leaf]]:
    """Leaves by the child (key path of length ``depth + 1``) they sit in, in leaf order."""
    out: dict[str, list[Leaf]] = {}
    for leaf in leaves:
        out.setdefault(".".join(leaf.path[:depth + 1]), []).append(leaf)
    return out


def _ordered_leaves(view: TreeView, order: Mapping[str, int] | None) -> list[Leaf]:
    leaves = list(view)
    if not order:
        return leaves
    big = len(order) + 1

    def rank(leaf: Leaf) -> tuple[int, int]:
        for owner in reversed(leaf.owners):
            if owner.path in order:
                return (order[owner.path], leaf.index)
        return (big, leaf.index)

    return sorted(leaves, key=rank)


def _subtree_numel(leaves: Sequence[Leaf]) -> dict[str, int]:
    out: dict[str, int] = {}
    for leaf in leaves:
        if leaf.kind != PARAM:
            continue
        parts = leaf.path
        for cut in range(len(parts)):
            prefix = ".".join(parts[:cut])
            out[prefix] = out.get(prefix, 0) + leaf.numel
    return out


def _children(leaves: Sequence[Leaf]) -> dict[str, list[str]]:
    """Child module paths of every module path, in leaf order (params only)."""
    out: dict[str, dict[str, None]] = {}
    for leaf in leaves:
        if leaf.kind != PARAM:
            continue
        parts = leaf.path
        for cut in range(len(parts) - 1):
            parent = ".".join(parts[:cut])
            child = ".".join(parts[: cut + 1])
            out.setdefault(parent, {}).setdefault(child, None)
    return {k: list(v) for k, v in out.items()}


def _best_run(leaves: Sequence[Leaf], classes: Mapping[str, type],
              numel: Mapping[str, int]) -> _Run | None:
    best: _Run | None = None
    best_rank: tuple[bool, int, int] | None = None
    tree = _children(leaves)

    def kind(path: str) -> Any:
        # Generic containers are alike only when they hold the same kinds of modules: a stage
        # Sequential of blocks is not the Sequential that holds a classifier head.
        cls = classes.get(path)
        if cls is None or cls.__name__ not in _CONTAINERS:
            return cls
        return cls, frozenset(classes.get(c) for c in tree.get(path, ()))

    for parent, children in tree.items():
        run: list[str] = []
        for child in [*children, None]:
            cls = classes.get(child) if child is not None else None
            if run and child is not None and cls is not None and kind(child) == kind(run[0]):
                run.append(child)
                continue
            if len(run) >= 2:
                candidate = _Run(parent, tuple(run), classes[run[0]].__name__,
                                 sum(numel.get(c, 0) for c in run))
                # Blocks are modules made of modules: a run of them beats a run of plain layers
                # (BERT's three embedding tables outweigh its encoder layers, but are no trunk).
                rank = (run[0] in tree, candidate.numel, len(candidate.children))
                if best_rank is None or rank > best_rank:
                    best, best_rank = candidate, rank
            run = [child] if child is not None and cls is not None else []
    return best
