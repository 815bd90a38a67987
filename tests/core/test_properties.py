"""Properties of plans and selectors on random module trees (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frostline as fl
from frostline.core.grouping import auto_groups
from frostline.core.leaves import BUFFER, PARAM, Leaf, Owner, TreeView
from frostline.core.selectors import MatchContext, ModuleType


class Module:
    pass


class Linear(Module):
    pass


class LayerNorm(Module):
    pass


class RMSNorm(LayerNorm):
    pass


class Block(Module):
    pass


CLASSES = (Module, Linear, LayerNorm, RMSNorm, Block)
KEYS = ("a", "b", "fc1", "fc2", "0", "1", "2", "norm", "attn")
LEAF_KEYS = ("weight", "bias", "running_mean")
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tree_views(draw) -> TreeView:
    """A random model: leaves under random module paths, each module of a random class."""
    module_paths = draw(st.lists(
        st.lists(st.sampled_from(KEYS), min_size=0, max_size=3).map(tuple),
        min_size=1, max_size=8, unique=True))
    classes: dict[tuple[str, ...], type] = {(): draw(st.sampled_from(CLASSES))}
    names: dict[str, tuple[str, ...]] = {}
    for module in module_paths:
        for cut in range(1, len(module) + 1):
            if module[:cut] not in classes:
                classes[module[:cut]] = draw(st.sampled_from(CLASSES))
        for key in draw(st.lists(st.sampled_from(LEAF_KEYS), min_size=1, max_size=3,
                                 unique=True)):
            names[".".join((*module, key))] = (*module, key)
    leaves = []
    for index, (name, path) in enumerate(names.items()):
        owners = tuple(Owner(".".join(path[:cut]), classes[path[:cut]])
                       for cut in range(len(path)))
        kind = BUFFER if path[-1] == "running_mean" else PARAM
        leaves.append(Leaf(name, path, owners, (2,), "float32", kind, index=index))
    return TreeView(tuple(leaves))


def atoms(view: TreeView) -> st.SearchStrategy[fl.Selector]:
    module_paths = [p for p in view.all_module_paths if p]
    globs = st.sampled_from([*view.names, *module_paths]).flatmap(
        lambda text: st.lists(st.sampled_from(["keep", "*", "**"]),
                              min_size=len(text.split(".")),
                              max_size=len(text.split("."))).map(
            lambda how: ".".join(seg if h == "keep" else h
                                 for seg, h in zip(text.split("."), how))))
    return st.one_of(
        st.sampled_from([*KEYS, *LEAF_KEYS, "fc*", "?"]).map(fl.name),
        globs.map(fl.path),
        st.sampled_from([r"fc\d", r"^a\.", r"bias$", r"(0|1)\.w", r'no "such" \w+']).map(
            fl.regex),
        st.sampled_from([c.__name__ for c in CLASSES]).map(fl.module_type),
        st.sampled_from(CLASSES).map(fl.module_type),
        st.sampled_from([c.__name__ for c in CLASSES]).map(fl.class_name),
        st.sampled_from(["param", "buffer"]).map(fl.kind),
        st.sampled_from([0, -1, slice(-2, None), slice(1, 3), slice(None, None, 2)]).map(
            fl.group),
        st.sampled_from(auto_groups(view).names).map(fl.group),  # names such as "0" or "a.1"
        st.just(fl.everything()),
    )


def selectors(view: TreeView) -> st.SearchStrategy[fl.Selector]:
    return st.recursive(
        atoms(view),
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda pair: pair[0] & pair[1]),
            st.tuples(inner, inner).map(lambda pair: pair[0] | pair[1]),
            inner.map(lambda sel: ~sel),
        ),
        max_leaves=6,
    )


@st.composite
def views_with_selectors(draw, count: int = 1):
    view = draw(tree_views())
    return view, [draw(selectors(view)) for _ in range(count)]


@st.composite
def views_with_rules(draw):
    view = draw(tree_views())
    rules = draw(st.lists(st.tuples(st.sampled_from(["freeze", "unfreeze"]), selectors(view)),
                          max_size=5))
    return view, rules


def build_plan(rules) -> fl.Plan:
    plan = fl.Plan()
    for action, selector in rules:
        plan = getattr(plan, action)(selector, allow_empty=True)
    return plan


def hits(selector: fl.Selector, view: TreeView) -> list[bool]:
    return selector.select(MatchContext(view, auto_groups(view)))


@SETTINGS
@given(views_with_rules())
def test_last_matching_rule_decides_each_leaf(case):
    view, rules = case
    mask = build_plan(rules).evaluate(view, auto_groups(view))
    vectors = [hits(selector, view) for _, selector in rules]
    for i, name in enumerate(view.names):
        matching = [r for r, vector in enumerate(vectors) if vector[i]]
        expected = rules[matching[-1]][0] == "unfreeze" if matching else True
        assert mask[name] == expected, name
        assert mask.decided_by[i] == (matching[-1] if matching else None)


@SETTINGS
@given(views_with_rules(), st.data())
def test_freeze_then_unfreeze_restores_the_selection_to_trainable(case, data):
    view, rules = case
    target = data.draw(selectors(view))
    groups = auto_groups(view)
    before = build_plan(rules).evaluate(view, groups).trainable
    after = build_plan([*rules, ("freeze", target), ("unfreeze", target)]).evaluate(
        view, groups).trainable
    selected = hits(target, view)
    assert after == tuple(True if s else b for s, b in zip(selected, before))
    assert build_plan([("freeze", target), ("unfreeze", target)]).evaluate(
        view, groups).trainable == fl.Plan().evaluate(view).trainable


@SETTINGS
@given(views_with_selectors())
def test_printed_selectors_parse_back_with_identical_matches(case):
    view, (selector,) = case
    text = selector.to_string()
    parsed = fl.parse(text)
    assert hits(parsed, view) == hits(selector, view), text
    assert parsed.to_string() == text
    # Classes print as their names, so only selectors without class objects compare equal.
    if not any(isinstance(atom, ModuleType) and any(isinstance(t, type) for t in atom.types)
               for atom in selector.atoms()):
        assert parsed == selector, text


@SETTINGS
@given(views_with_rules())
def test_plans_round_trip_through_yaml_with_identical_masks(case):
    view, rules = case
    plan = build_plan(rules)
    groups = auto_groups(view)
    assert fl.Plan.from_yaml(plan.to_yaml()).evaluate(view, groups) == plan.evaluate(view, groups)


@SETTINGS
@given(views_with_selectors(count=2))
def test_operators_are_set_operations(case):
    view, (left, right) = case
    a, b = hits(left, view), hits(right, view)
    assert hits(left & right, view) == [x and y for x, y in zip(a, b)]
    assert hits(left | right, view) == [x or y for x, y in zip(a, b)]
    assert hits(~left, view) == [not x for x in a]
