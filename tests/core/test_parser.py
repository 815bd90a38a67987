"""The selector string syntax: each prefix, operators, quoting and syntax errors."""

from __future__ import annotations

import pytest

import frostline as fl
from frostline.core.selectors import MatchContext


def vector(selector, view, groups=None):
    selector = fl.parse(selector) if isinstance(selector, str) else selector
    return selector.select(MatchContext(view, groups))


@pytest.mark.parametrize("text, built", [
    ("encoder.layer.*", fl.path("encoder.layer.*")),
    ("path:encoder.layer.*", fl.path("encoder.layer.*")),
    ("name:bias", fl.name("bias")),
    ("name:bias,A", fl.name("bias", "A")),
    ("type:LayerNorm", fl.module_type("LayerNorm")),
    ("class:MLP", fl.class_name("MLP")),
    ("group:-2:", fl.group(slice(-2, None))),
    ("group:1:3", fl.group(slice(1, 3))),
    ("group:::2", fl.group(slice(None, None, 2))),
    ("group:-1", fl.group(-1)),
    ("group:layer1", fl.group("layer1")),
    ("kind:buffer", fl.kind("buffer")),
    (r"re:fc\d", fl.regex(r"fc\d")),
    (r're:"(fc1|qkv)\.weight"', fl.regex(r"(fc1|qkv)\.weight")),
    (r"re:/(fc1|qkv)\.bias/", fl.regex(r"(fc1|qkv)\.bias")),
    ("**", fl.path("**")),
])
def test_each_prefix_parses_to_its_selector(text, built, toy_view, toy_groups):
    parsed = fl.parse(text)
    assert parsed == built
    assert vector(parsed, toy_view, toy_groups) == vector(built, toy_view, toy_groups)


def test_and_binds_tighter_than_or(toy_view):
    parsed = fl.parse("name:A | name:head & name:bias")
    expected = fl.name("A") | (fl.name("head") & fl.name("bias"))
    assert vector(parsed, toy_view) == vector(expected, toy_view)
    assert vector(parsed, toy_view) != vector((fl.name("A") | fl.name("head")) & fl.name("bias"),
                                              toy_view)


def test_parentheses_group_and_not_negates(toy_view):
    parsed = fl.parse("!(name:A | name:head) & name:bias")
    expected = ~(fl.name("A") | fl.name("head")) & fl.name("bias")
    assert vector(parsed, toy_view) == vector(expected, toy_view)
    assert any(vector(parsed, toy_view))


def test_whitespace_between_tokens_is_ignored(toy_view):
    assert vector(fl.parse("  name:A&!name:bias "), toy_view) == vector(
        fl.parse("name:A & ! name:bias"), toy_view)


def test_printed_selectors_parse_back_to_equal_selectors():
    selector = (fl.path("encoder.layer.*") & ~fl.name("bias")) | fl.regex(r"^A\.(fc1|fc2)") | (
        fl.group(slice(-2, None)) & fl.kind("param") & fl.module_type("LayerNorm"))
    assert fl.parse(selector.to_string()) == selector


def test_regex_with_quotes_and_backslashes_round_trips():
    selector = fl.regex(r'say "hi"\.\d+ | x')
    assert fl.parse(selector.to_string()) == selector


def test_parse_rejects_non_strings():
    with pytest.raises(fl.SelectorSyntaxError, match="expected a selector string, got int"):
        fl.parse(3)


@pytest.mark.parametrize("text, position, expected", [
    ("", 0, "expected a selector, found an empty string"),
    ("name:A &", 8, r"expected a selector .*found the end"),
    ("(name:A", 7, r"expected '\)', found the end"),
    ("name:A)", 6, r"expected '&', '\|' or the end of the selector, found '\)'"),
    ("nmae:bias", 0, "expected a prefix among name, path, re, type, class, group, kind, "
                     "found 'nmae'"),
    ("name:", 5, "expected a value after 'name:'"),
    ("name:A name:B", 7, r"expected '&', '\|' or the end of the selector, found 'n'"),
    ('re:"abc', 3, 'expected a closing "'),
    ("group:a:b", 6, "a group slice holds integers"),
    ("group:1:2:0", 6, "step cannot be zero"),
    ("kind:state", 5, "unknown kind 'state'"),
    ("name:bias,,A", 5, "empty alternative"),
    ("re:[unclosed", 3, "invalid regular expression"),
    ("| name:A", 0, "expected a selector"),
])
def test_malformed_strings_fail_with_position_and_expectation(text, position, expected):
    with pytest.raises(fl.SelectorSyntaxError, match=expected) as info:
        fl.parse(text)
    message = str(info.value)
    assert f"at position {position}:" in message
    # The caret line points at the position under the echoed selector.
    lines = message.splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * position + "^"


def test_syntax_errors_are_selector_errors_and_frostline_errors():
    with pytest.raises(fl.SelectorError):
        fl.parse("(")
    assert issubclass(fl.SelectorSyntaxError, fl.FrostlineError)


def test_malformed_string_in_a_plan_fails_when_the_rule_is_written():
    with pytest.raises(fl.SelectorSyntaxError, match="position 8"):
        fl.Plan().freeze("name:A &")


@pytest.mark.parametrize("key", [-1, 3, "2", "-1", "blocks.3", "a:b", 'he"ad', "x y",
                                 slice(-2, None), slice(None, 3, 2)])
def test_group_keys_print_and_parse_back_unchanged(key):
    selector = fl.group(key)
    parsed = fl.parse(selector.to_string())
    assert parsed == selector
    assert type(parsed.key) is type(key)


def test_a_quoted_group_value_is_a_name_even_if_it_looks_like_an_index():
    assert fl.parse('group:"2"') == fl.group("2")
    assert fl.parse("group:2") == fl.group(2)


@pytest.mark.parametrize("text", ["(" * 330 + "a" + ")" * 330, "!" * 330 + "a",
                                  "(!" * 2000 + "a" + ")" * 2000])
def test_deep_nesting_is_a_syntax_error_not_a_recursion_error(text):
    with pytest.raises(fl.SelectorSyntaxError, match="at most 100 nested parentheses and '!'"):
        fl.parse(text)


def test_nesting_up_to_the_limit_parses():
    assert fl.parse("!" * 100 + "a").to_string() == "!" * 100 + "a"
    assert fl.parse("(" * 100 + "a" + ")" * 100).to_string() == "a"


def test_syntax_error_in_a_long_selector_shows_a_window_with_the_caret():
    text = "a | " * 5000 + "b &"
    with pytest.raises(fl.SelectorSyntaxError) as caught:
        fl.parse(text)
    message = str(caught.value)
    assert len(message) < 500
    line, caret = message.split("\n")[1:3]
    assert line.startswith("  ...") and caret.index("^") == len(line)


# --- traps in values -----------------------------------------------------------------------------


def test_single_negative_group_index_is_refused_as_ambiguous():
    with pytest.raises(fl.SelectorError, match=r"'group:-2' is ambiguous: it is one group, the "
                       r"2nd from the head, not the last 2\. Write 'group:-2:' for the last 2 "
                       r"groups, or 'group:-2:-1' for that one group"):
        fl.parse("group:-2")


def test_unambiguous_group_forms_select_what_they_say(toy_view, toy_groups):
    assert vector("group:-1", toy_view, toy_groups) == vector("group:-1:", toy_view, toy_groups)
    one = [leaf.name in toy_groups[2].leaf_names for leaf in toy_view]
    assert vector("group:-2:-1", toy_view, toy_groups) == one
    assert vector(fl.group(-2), toy_view, toy_groups) == one
    assert str(fl.group(-2)) == "group:-2:-1" and fl.parse(str(fl.group(-2))) == fl.group(-2)


@pytest.mark.parametrize("text, message", [
    ("group:-0:", r"'-0' is 0, the first group from the input"),
    ("group:-0", r"'-0' is 0"),
    ("group:1_0", r"'1_0' is not a group index: write indices with the digits 0-9 only"),
    ("group:\u0663", r"is not a group index"),  # ARABIC-INDIC DIGIT THREE
    ("group:1:\u0663", r"is not a group index"),
    ("group:" + "9" * 5000, r"is too large"),
])
def test_group_indices_are_ascii_digits_and_never_minus_zero(text, message):
    with pytest.raises(fl.SelectorError, match=message):
        fl.parse(text)


def test_quoted_group_values_are_names_and_print_back_quoted():
    for key in ["1_0", "\u0663", "2", "a:b"]:
        text = str(fl.group(key))
        assert text.startswith('group:"') and fl.parse(text).key == key


def test_a_quoted_alternative_keeps_its_commas(make_view):
    view = make_view(["a,b.w", "a.w", "b.w", "c.w"], {})
    assert fl.parse('name:"a,b"').names == ("a,b",)
    assert vector('name:"a,b",c', view) == [True, False, False, True]
    assert vector('path:"a,b"', view) == [True, False, False, False]
    assert vector("name:a,b", view) == [False, True, True, False]
    assert str(fl.name("a,b", "c")) == 'name:"a,b",c'
    assert fl.parse(str(fl.name("a,b", "c"))) == fl.name("a,b", "c")


def test_kind_takes_several_kinds(toy_view):
    assert vector("kind:param,buffer", toy_view) == [True] * len(toy_view)
    assert vector("kind:buffer,buffer", toy_view) == vector("kind:buffer", toy_view)
