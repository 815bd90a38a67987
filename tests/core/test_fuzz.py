"""Hostile input for the selector and plan parsers: every failure is a FrostlineError."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from frostline import FrostlineError, PlanError, SelectorError
from frostline.core.groups import Group, Groups
from frostline.core.leaves import BUFFER, PARAM, Leaf, Owner, TreeView
from frostline.core.parser import parse
from frostline.core.plan import Plan
from frostline.core.selectors import MatchContext

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class Linear:
    pass


class LayerNorm:
    pass


def _view() -> TreeView:
    def leaf(name: str, cls: type, kind: str = PARAM) -> Leaf:
        keys = tuple(name.split("."))
        owners = (Owner("", object), *(Owner(".".join(keys[:i]), cls) for i in
                                       range(1, len(keys))))
        return Leaf(name, keys, owners, (2, 2), "float32", kind)

    leaves = [leaf("stem.weight", Linear), leaf("stem.bias", Linear),
              leaf("blocks.0.norm.weight", LayerNorm), leaf("blocks.0.fc.weight", Linear),
              leaf("blocks.0.fc.running_mean", Linear, BUFFER), leaf("head.weight", Linear)]
    return TreeView(tuple(Leaf(**{**vars(lf), "index": i}) for i, lf in enumerate(leaves)))


VIEW = _view()
GROUPS = Groups((Group("stem", 0, VIEW.names[:2]), Group("blocks.0", 1, VIEW.names[2:5]),
                 Group("head", 2, VIEW.names[5:])))

# Selector-ish alphabet: operators, prefixes, quotes, globs, digits, colons and unicode.
SELECTOR_ALPHABET = st.sampled_from(list("&|!()*?[]:,./\\'\" -_aAz019é\t") + [
    "name:", "path:", "re:", "type:", "class:", "group:", "kind:", "**", "param", "buffer",
    "stem", "head", "weight", "bias", "LayerNorm", "blocks", "-2:", "::0"])
SELECTOR_TEXT = st.lists(SELECTOR_ALPHABET, max_size=12).map("".join)


def _parse_or_error(text: str):
    try:
        return parse(text)
    except FrostlineError as exc:
        assert str(exc), "an error without a message"
        return None


@SETTINGS
@given(st.text(max_size=40))
def test_random_text_parses_or_raises_a_selector_error(text):
    _parse_or_error(text)


@SETTINGS
@given(SELECTOR_TEXT)
@example("re:[[")  # re's FutureWarning ("possible nested set") once escaped as an error
@example("'")  # once printed as "path:'", which did not parse back
def test_selector_like_text_parses_or_raises_a_selector_error(text):
    _parse_or_error(text)


@SETTINGS
@given(SELECTOR_TEXT)
def test_parsed_selector_evaluates_or_raises_a_frostline_error(text):
    selector = _parse_or_error(text)
    if selector is None:
        return
    try:
        hits = selector.select(MatchContext(VIEW, GROUPS))
    except FrostlineError as exc:
        assert str(exc)
        return
    assert len(hits) == len(VIEW) and all(isinstance(h, bool) for h in hits)


@SETTINGS
@given(SELECTOR_TEXT)
@example("'")
@example('name:"a b" | path:"x&y"')
def test_printed_selector_parses_back_to_the_same_selection(text):
    selector = _parse_or_error(text)
    if selector is None:
        return
    again = parse(selector.to_string())
    assert again.to_string() == selector.to_string()
    ctx = MatchContext(VIEW, GROUPS)
    try:
        expected = selector.select(ctx)
    except FrostlineError:
        return
    assert again.select(MatchContext(VIEW, GROUPS)) == expected


JSON_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | (
    st.text(max_size=8)) | SELECTOR_TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["freeze", "unfreeze", "allow_empty", "rules", "version", "x"]) | (
            st.text(max_size=5)), inner, max_size=4),
    max_leaves=12)
PLAN_KEYS = st.sampled_from(["version", "rules", "freeze_bn_stats", "train_bn",
                             "unlocked_groups", "extra"])
RULES = st.lists(st.dictionaries(st.sampled_from(["freeze", "unfreeze", "allow_empty", "why"]),
                                 JSON_SCALARS | SELECTOR_TEXT, max_size=3), max_size=4)
PLAN_DICTS = st.dictionaries(PLAN_KEYS, JSON_VALUES | RULES, max_size=5) | JSON_VALUES


@SETTINGS
@given(PLAN_DICTS)
def test_random_plan_dict_loads_or_raises_a_plan_error(data):
    try:
        plan = Plan.from_dict(data)
    except PlanError as exc:
        assert str(exc)
        return
    assert Plan.from_dict(plan.to_dict()) == plan
    assert Plan.from_yaml(plan.to_yaml()) == plan


@SETTINGS
@given(st.text(max_size=60))
def test_random_yaml_and_json_text_loads_or_raises_a_plan_error(text):
    for load in (Plan.from_yaml, Plan.from_json):
        try:
            load(text)
        except PlanError as exc:
            assert str(exc)


@SETTINGS
@given(PLAN_DICTS.filter(lambda d: isinstance(d, dict)))
def test_random_plan_evaluates_or_raises_a_frostline_error(data):
    try:
        plan = Plan.from_dict(data)
        mask = plan.evaluate(VIEW, GROUPS)
    except FrostlineError as exc:
        assert str(exc)
        return
    assert mask.names == VIEW.names


def test_float_fuzz_values_are_not_silently_accepted_as_flags():
    for value in (math.nan, 1.0, 0.0):
        try:
            Plan.from_dict({"rules": [], "train_bn": value})
        except PlanError as exc:
            assert "'train_bn' must be true or false" in str(exc)
        else:
            raise AssertionError(f"train_bn={value!r} was accepted")
    assert isinstance(SelectorError("x"), FrostlineError)


# --- hostile text and bytes: a FrostlineError or a correct result, each case in bounded time ------
# Each example must finish within DEADLINE (a generous bound: a backtracking regex, an alias
# bomb or a recursion blow-up takes minutes or never ends, a correct check milliseconds).

DEADLINE = 5000  # milliseconds
HOSTILE = settings(max_examples=150, deadline=DEADLINE,
                   suppress_health_check=[HealthCheck.too_slow])

REGEX_PIECES = st.sampled_from([
    "(", ")", "a", "+", "*", "?", "|", "\\w", "\\.", ".", "$", "^", "{", "}", ",", "9", "0",
    "1000", "1001", "99999999999", "[", "]", "^", "(?=", "(?P<x>", "\\1", "(?i)", "\\", "é",
    "\ud800", "b", "bias", "{,", "[:alpha:]",
])
REGEX_TEXT = st.lists(REGEX_PIECES, max_size=16).map("".join)
DEEP = st.builds(lambda n, op: op * n + "a" + (")" * n if op == "(" else ""),
                 st.integers(50, 3000), st.sampled_from(["(", "!", "(!"]))


@HOSTILE
@given(REGEX_TEXT)
@example("^(\\w+\\.?)*bias$")
@example("(a+)+$")
@example("a{99999999999}")
@example("\ud800")
def test_any_regex_compiles_or_raises_a_selector_error_and_matches_in_bounded_time(pattern):
    long_names = ["encoder.layer.0.attention.self.query.weight", "a" * 3000 + "!"]
    view = TreeView(tuple(Leaf(n, tuple(n.split(".")), (Owner("", Linear),), (1,), "float32",
                               index=i) for i, n in enumerate(long_names)))
    for text in ("re:" + _quoted(pattern), "name:" + _quoted(pattern),
                 "path:" + _quoted(pattern)):
        selector = _parse_or_error(text)
        if selector is not None:
            hits = selector.select(MatchContext(view))
            assert len(hits) == 2 and all(isinstance(h, bool) for h in hits)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@HOSTILE
@given(DEEP | SELECTOR_TEXT | st.text(max_size=200))
def test_deep_or_arbitrary_selector_text_parses_or_raises_a_selector_error(text):
    selector = _parse_or_error(text)
    if selector is not None:
        assert parse(selector.to_string()).to_string() == selector.to_string()


YAML_PIECES = st.sampled_from([
    "\n", " ", "  ", "- ", ": ", "&a ", "*a", "&b ", "*b", "<<: ", "!!python/object:os.system",
    "!!binary ", "!!int ", "[", "]", "{", "}", ",", "'", '"', "#", "---", "...", "version",
    "rules", "freeze", "unfreeze", "allow_empty", "train_bn", "groups", "spec", "names",
    "true", "1", "9" * 50, "9" * 5000, "2024-13-45", "1e309", ".nan", "~", "|", ">", "\t",
    "'**'", "group:-2:", "re:\"(a+)+$\"", "\ufeff", "é", "\x85", "\u2028",
])
YAML_TEXT = st.lists(YAML_PIECES, max_size=30).map("".join)
RAW_BYTES = st.binary(max_size=300) | YAML_TEXT.map(
    lambda t: t.encode("utf-8", "surrogatepass")) | YAML_TEXT.flatmap(
    lambda t: st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "utf-8-sig"]).map(
        lambda enc: t.encode(enc, "replace")))


def _plan_or_error(load, data):
    try:
        plan = load(data)
    except PlanError as exc:
        assert str(exc) and len(str(exc)) < 2000, "an error message must stay short"
        return None
    assert isinstance(plan, Plan)
    assert Plan.from_dict(plan.to_dict()) == plan
    return plan


@HOSTILE
@given(YAML_TEXT | st.text(max_size=200))
@example("a: &a [x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nversion: *b\n")
@example("rules: " + "[" * 2000)
@example("version: " + "9" * 5000)
def test_arbitrary_yaml_and_json_text_loads_or_raises_a_plan_error(text):
    _plan_or_error(Plan.from_yaml, text)
    _plan_or_error(Plan.from_json, text)


@HOSTILE
@given(RAW_BYTES)
@example(b"\xff\xfe" + "rules: []".encode("utf-16-le"))
@example("rules: [{freeze: 'é'}]".encode("latin-1"))
def test_arbitrary_bytes_load_as_a_plan_or_raise_a_plan_error(data):
    _plan_or_error(Plan.from_yaml, data)
    _plan_or_error(Plan.from_json, data)


@HOSTILE
@given(RAW_BYTES, st.sampled_from([".yaml", ".json", ".yml", ""]))
def test_arbitrary_plan_files_load_or_raise_a_plan_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("plans") / f"plan{suffix}"
    path.write_bytes(data)
    _plan_or_error(Plan.load, str(path))
