"""User patterns in linear time (RE2), glob character classes, and patterns RE2 refuses."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import frostline as fl
from frostline.core._patterns import PathGlob, compile_path_glob
from frostline.core.selectors import MatchContext

BERT_NAME = "encoder.layer.0.attention.self.query.weight"  # 43 characters


def picked(selector, view, groups=None):
    hits = fl.parse(selector).select(MatchContext(view, groups))
    return [leaf.name for leaf, hit in zip(view, hits) if hit]


def _run_bounded(code: str, timeout: float = 60.0) -> str:
    """Run ``code`` in a fresh interpreter; a hang fails the test after ``timeout`` seconds
    (a backtracking regex holds the GIL, so a thread could not be timed out)."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s: the match backtracks")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pathological_regexes_finish_and_give_the_right_answer():
    # With a backtracking engine the first takes minutes on one name and the others double
    # with every character: only a linear-time engine gets through all of them.
    out = _run_bounded(f"""
        from frostline.core.leaves import Leaf, Owner, TreeView
        from frostline.core.parser import parse
        from frostline.core.selectors import MatchContext

        names = [{BERT_NAME!r}, "a" * 60 + "!", "a" * 5000 + ".bias"]
        view = TreeView(tuple(Leaf(n, tuple(n.split(".")), (Owner("", object),), (1,),
                                   "float32", index=i) for i, n in enumerate(names)))
        for text in [r're:"^(\\w+\\.?)*bias$"', 're:"(a+)+$"', 're:"(a|aa)*c"',
                     r're:"^(([a-z])+.)+[A-Z]([a-z])+$"', 're:"(.*a){{20}}"']:
            print(parse(text).select(MatchContext(view)))
    """)
    assert out.split("\n")[:5] == [
        "[False, False, True]",  # only the last name is word characters and dots, then "bias"
        "[False, False, False]",  # no name ends in "a"
        "[True, False, False]",  # "encoder" holds a "c"
        "[False, False, False]",  # no capital letter
        "[False, True, True]",  # at least 20 "a"s
    ]


def test_pathological_globs_finish_and_give_the_right_answer():
    # Translated to one backtracking regex, each star or '**' multiplies the work by the length.
    out = _run_bounded("""
        from frostline.core.leaves import Leaf, Owner, TreeView
        from frostline.core.parser import parse
        from frostline.core.selectors import MatchContext

        names = ["a" * 3000 + ".x", ".".join(["s"] * 300) + ".y", "a" * 2999 + "b"]
        view = TreeView(tuple(Leaf(n, tuple(n.split(".")), (Owner("", object),), (1,),
                                   "float32", index=i) for i, n in enumerate(names)))
        for text in ['path:"' + "*a" * 15 + '*b"', "name:" + "*a" * 15 + "*b",
                     "**." * 12 + "z", "**." * 12 + "y"]:
            print(parse(text).select(MatchContext(view)))
    """)
    assert out.split("\n")[:4] == [
        "[False, False, True]",
        "[False, False, True]",
        "[False, False, False]",
        "[False, True, False]",
    ]


def test_regex_search_is_still_a_search_in_the_dotted_name(toy_view):
    assert picked(r're:"^encoder\.layer\.[01]\.norm\.bias$"', toy_view) == [
        "encoder.layer.0.norm.bias", "encoder.layer.1.norm.bias"]
    assert picked("re:fc[12]", toy_view) == [
        "A.fc1.weight", "A.fc1.bias", "A.fc2.weight", "A.fc2.bias"]


@pytest.mark.parametrize("pattern, reason", [
    (r"(a)\1", "invalid escape sequence"),
    ("(?=bias)", "invalid perl operator"),
    ("(?<!head)bias", "invalid perl operator"),
    ("[[", "missing ]"),
    ("a**", "bad repetition operator"),
])
def test_pattern_re2_cannot_take_is_a_selector_error_saying_why(pattern, reason):
    with pytest.raises(fl.SelectorError, match=rf"invalid regular expression .*{reason}.*"
                       "RE2 pattern"):
        fl.regex(pattern)


@pytest.mark.parametrize("text, message", [
    ("re:a{99999999999}", r"repetition \{99999999999\}.*too large: counts go up to 1000"),
    ("re:a{1001}", r"too large"),
    ("re:a{2,5000}", r"too large"),
    ("re:a{" + "9" * 5000 + "}", r"too large"),  # more digits than int() reads
    ("re:a{,3}", r"read literally by RE2; write '\{0,3\}'"),
])
def test_huge_or_misread_repetition_counts_are_selector_errors(text, message):
    with pytest.raises(fl.SelectorError, match=message):
        fl.parse(text)


def test_bounded_repetitions_and_braces_that_are_not_repetitions_still_work(toy_view):
    assert picked(r're:"^encoder\.layer\.\d{1,1000}\.norm\.bias"', toy_view) == [
        "encoder.layer.0.norm.bias", "encoder.layer.1.norm.bias"]
    assert fl.regex(r"[{]99999999999}")  # inside a class: literal characters
    assert fl.regex(r"\{99999999999}")  # escaped: literal


def test_messages_echo_at_most_about_80_characters_of_a_pattern():
    with pytest.raises(fl.SelectorError) as caught:
        fl.regex("(" * 5000)
    assert "... (5000 characters)" in str(caught.value)
    assert len(str(caught.value)) < 400


# --- glob character classes ----------------------------------------------------------------------


@pytest.fixture
def blocks_view(make_view):
    return make_view([f"blocks.{i}.fc.weight" for i in range(12)] + ["head.weight"], {})


def test_path_glob_character_class_selects_those_blocks(blocks_view):
    assert picked("blocks.1[01]", blocks_view) == ["blocks.10.fc.weight", "blocks.11.fc.weight"]
    assert picked("blocks.[2-4].fc", blocks_view) == [
        "blocks.2.fc.weight", "blocks.3.fc.weight", "blocks.4.fc.weight"]


def test_glob_class_inside_or_selects_as_documented(blocks_view):
    # It used to be read literally: with "| head" the rule matched something, so nothing warned.
    assert picked("blocks.1[01] | head", blocks_view) == [
        "blocks.10.fc.weight", "blocks.11.fc.weight", "head.weight"]


def test_negated_class_never_matches_the_dot(blocks_view):
    assert picked('path:"blocks.[!0-8]"', blocks_view) == ["blocks.9.fc.weight"]
    assert picked('path:"blocks.1[!0]"', blocks_view) == ["blocks.11.fc.weight"]
    assert picked('path:"blocks[!x]1"', blocks_view) == []  # "[!x]" is one non-dot character


def test_name_glob_classes_match_one_key(toy_view):
    assert picked("name:fc[2-9]", toy_view) == ["A.fc2.weight", "A.fc2.bias"]


@pytest.mark.parametrize("text, message", [
    ("blocks.1[01", r"unclosed '\[' in the glob 'blocks.1\[01'.*'\[\[\]' for a literal"),
    ("name:fc[9-2]", r"the range 9-2 .* runs backwards"),
])
def test_malformed_glob_class_is_refused(text, message):
    with pytest.raises(fl.SelectorError, match=message):
        fl.parse(text)


def test_bracket_class_for_a_literal_bracket(make_view):
    view = make_view(["a.w", "b.w"], {})
    assert picked("name:[[]x", view) == []
    assert fl.parse("name:[[]x").to_string() == "name:[[]x"


GLOB_PIECES = st.sampled_from(["a", "b", "*", "?", "[ab]", "[!a]", ".", "**", "^", "-"])
NAME_PIECES = st.sampled_from(["a", "b", ".", "^", "-"])


@settings(max_examples=300, deadline=None)
@given(st.lists(GLOB_PIECES, min_size=1, max_size=8).map("".join),
       st.lists(NAME_PIECES, min_size=1, max_size=10).map("".join))
def test_one_regex_and_the_segment_walk_agree_on_every_glob(glob, name):
    try:
        compiled = compile_path_glob(glob)
    except fl.SelectorError:
        return
    walk = object.__new__(PathGlob)
    walk.glob, walk.segments, walk.regex = compiled.glob, compiled.segments, None
    parts = name.split(".")
    segments = glob.split(".")
    # Reference: fnmatch per segment, '**' any number of segments, the rest a subtree.
    reach = {0}
    for seg in segments:
        if seg == "**":
            reach = set(range(min(reach), len(parts) + 1)) if reach else set()
        else:
            reach = {p + 1 for p in reach if p < len(parts) and fnmatch.fnmatchcase(parts[p], seg)}
    assert compiled.fullmatch(name) == walk.fullmatch(name) == bool(reach)
