"""User patterns (``re:`` regexes, path and name globs), compiled to match in linear time.

Python's ``re`` backtracks: ``^(\\w+\\.?)*bias$`` takes minutes on one 43-character name, and a
plan file or a checkpoint's metadata can carry such a pattern. RE2 (``google-re2``) has no
backtracking, so a match takes time linear in the name whatever the pattern. It reads Python's
syntax except backreferences and lookaround (refused here, with RE2's reason); ``\\w``, ``\\d``
and ``\\b`` are ASCII there, as parameter names are.

Globs use ``*`` (any run of characters within one segment), ``?`` (one character), ``[seq]`` /
``[!seq]`` (one character in / not in ``seq``, ranges like ``a-z``) and, in paths, ``**`` (any
number of segments). Each segment is translated as ``fnmatch`` does (a star and the text after
it in an atomic group: no backtracking), so globs stay on Python's engine, linear in the name
and about ten times cheaper a call than RE2 through its Python binding
(``benchmarks/bench_selectors.py``).

Example:
    >>> bool(compile_regex(r"^(\\w+\\.?)*bias$").search("encoder.layer.0.attention.self.query.x"))
    False
    >>> compile_path_glob("blocks.1[01]").fullmatch("blocks.11.mlp.weight")
    True
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from typing import Any

import re2

from .._errors import SHOWN, SelectorError, shorten

# RE2's own limit on a counted repetition; larger counts are refused before RE2 sees them (RE2
# reads an oversized count as literal text, Python's re raises OverflowError).
MAX_REPEAT = 1000
# Memory RE2 may use for one compiled pattern (its default): bigger patterns are refused.
MAX_MEMORY = 8 << 20


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed on stderr
    options.max_mem = MAX_MEMORY
    return options


@lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> Any:
    """Compile a ``re:`` pattern with RE2, or raise :class:`SelectorError` saying why not.

    Raises:
        SelectorError: invalid syntax, syntax RE2 lacks (backreferences, lookaround), a
            repetition count over 1000, or a pattern too large to compile.
    """
    _check_repeats(pattern)
    return _compile(pattern, f"regular expression {shorten(pattern)}", (
        "Fix the pattern: it is an RE2 pattern (Python re syntax without backreferences or "
        "lookaround) searched in the dotted parameter name."))


class KeyGlob:
    """A glob over one key (no ``.`` inside), matched as :func:`fnmatch.fnmatchcase` does.

    Python's ``fnmatch`` translates each ``*`` and the text after it into an atomic group, so
    a match takes time linear in the key (times the number of stars), never backtracking.
    """

    __slots__ = ("glob", "fullmatch")

    def __init__(self, glob: str, whole: str) -> None:
        _check_classes(glob, whole)
        self.glob = glob
        if any(ch in glob for ch in "*?["):
            regex = re.compile(fnmatch.translate(glob))
            self.fullmatch: Any = lambda key: regex.match(key) is not None
        else:
            self.fullmatch = glob.__eq__

    def __reduce__(self) -> tuple[Any, ...]:
        return KeyGlob, (self.glob, self.glob)


@lru_cache(maxsize=1024)
def compile_key_glob(glob: str) -> KeyGlob:
    """Compile a glob over one key (``name:`` selectors), or raise :class:`SelectorError`.

    Example:
        >>> compile_key_glob("fc[12]").fullmatch("fc2"), compile_key_glob("fc[12]").fullmatch("fc3")
        (True, False)
    """
    return KeyGlob(glob, glob)


class PathGlob:
    """A dotted-path glob, matched segment by segment.

    ``*``, ``?`` and classes stay within one segment, ``**`` spans any number of segments, and
    a glob that matches a module path also matches every leaf below it. With ``**`` the match
    keeps the set of name positions reachable after each glob segment (as an NFA does), so it
    takes time linear in the name whatever the glob.
    """

    __slots__ = ("glob", "segments", "regex")

    def __init__(self, glob: str) -> None:
        self.glob = glob
        # Flat checkpoint names (big_vision, orbax: "Transformer/encoderblock_0/...") join keys
        # with "/": it separates segments as "." does.
        pieces = glob.replace("/", ".").split(".")
        self.segments = tuple(None if seg == "**" else KeyGlob(seg, glob).fullmatch
                              for seg in pieces)
        # Without '**' one regex does: segments are joined by literal dots and none can match a
        # dot, so each matches its own segment in one way (fnmatch's atomic groups inside).
        self.regex = None if None in self.segments else _dotted_regex(pieces)

    def __reduce__(self) -> tuple[Any, ...]:
        return PathGlob, (self.glob,)

    def fullmatch(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(name) is not None
        parts = name.split(".")
        positions = {0}
        for match in self.segments:
            if match is None:
                positions = set(range(min(positions), len(parts) + 1))
            else:
                positions = {p + 1 for p in positions if p < len(parts) and match(parts[p])}
            if not positions:
                return False
        return True


def _dotted_regex(segments: list[str]) -> re.Pattern[str] | None:
    """One regex for a glob without '**' (the rest of the name is a subtree), or None when
    fnmatch's translation is not in the form this relies on."""
    out = []
    for segment in segments:
        text = fnmatch.translate(segment)
        if not (text.startswith("(?s:") and text.endswith("\\Z")):
            return None
        # A segment holds no '.', so every '.' of its translation is a wildcard and a class
        # never names one: both stand for one character of the segment, never the dot
        # between segments.
        text = text[:-2].replace(".", "[^.]")
        out.append(re.sub(r"\[\^(?!\.\])", "[^.", text))
    return re.compile("\\.".join(out) + "(?:\\..*)?", re.S)


@lru_cache(maxsize=1024)
def compile_path_glob(glob: str) -> PathGlob:
    """Compile a dotted-path glob: it matches a leaf's name or the path of a module above it.

    Example:
        >>> g = compile_path_glob("encoder.**.b[01]")
        >>> [g.fullmatch(n) for n in ("encoder.x.y.b1.w", "encoder.b0", "encoder.b2")]
        [True, True, False]
    """
    return PathGlob(glob)


def _check_classes(glob: str, whole: str) -> None:
    """Refuse what fnmatch would read silently otherwise: an unclosed '[' (taken literally)
    and a range that runs backwards (dropped)."""
    i = 0
    while i < len(glob):
        if glob[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < len(glob) and glob[j] == "!":
            j += 1
        first = j
        while j < len(glob) and (glob[j] != "]" or j == first):
            j += 1
        if j >= len(glob):
            raise SelectorError(
                f"unclosed '[' in the glob {shorten(whole)}: '[seq]' matches one character of "
                "seq; write '[[]' for a literal '['."
            )
        body = glob[first:j]
        for k in range(len(body) - 2):
            if body[k + 1] == "-" and body[k] > body[k + 2]:
                raise SelectorError(f"the range {body[k]}-{body[k + 2]} in the glob "
                                    f"{shorten(whole)} runs backwards; write "
                                    f"{body[k + 2]}-{body[k]}.")
        i = j + 1


def _compile(text: str, what: str, advice: str) -> Any:
    try:
        return re2.compile(text, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = str(reason)
        if len(reason) > SHOWN:  # RE2 quotes the part of the pattern where it stopped
            reason = reason[:SHOWN] + "..."
        raise SelectorError(f"invalid {what}: {reason}. {advice}") from None
    except UnicodeEncodeError:
        raise SelectorError(f"invalid {what}: it holds characters that are not valid "
                            f"Unicode text (lone surrogates). {advice}") from None


def _check_repeats(pattern: str) -> None:
    """Refuse counted repetitions RE2 would misread: counts over 1000 and ``{,n}``."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _skip_class(pattern, i)
            continue
        if ch == "{":
            end = pattern.find("}", i)
            inner = pattern[i + 1:end] if end > 0 else ""
            low, comma, high = inner.partition(",")
            if end > 0 and (low or high) and (low + high).isascii() and (
                    (low + high).isdigit()) and (low.isdigit() or not low):
                if not low:
                    raise SelectorError(
                        f"'{{,{high}}}' in the regular expression {shorten(pattern)} is read "
                        f"literally by RE2; write '{{0,{high}}}' for up to {high} repetitions."
                    )
                if any(len(c) > 4 or int(c) > MAX_REPEAT for c in (low, high) if c):
                    raise SelectorError(
                        f"the repetition {{{shorten(inner, 20)[1:-1]}}} in the regular "
                        f"expression {shorten(pattern)} is too large: counts go up to "
                        f"{MAX_REPEAT}. Use '+' or '*' for an unbounded run."
                    )
        i += 1


def _skip_class(pattern: str, start: int) -> int:
    """The index after the character class starting at ``pattern[start] == '['``."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern.startswith("[:", i):
            close = pattern.find(":]", i + 2)
            if close > 0:
                i = close + 2
                continue
        if pattern[i] == "]":
            return i + 1
        i += 1
    return i
