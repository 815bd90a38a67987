"""User patterns (``re:`` regexes, path and name globs) compiled for RE2: matching in linear time.

Python's ``re`` backtracks: ``^(\\w+\\.?)*bias$`` takes minutes on one 43-character name, and a
plan file or a checkpoint's metadata can carry such a pattern. RE2 (``google-re2``) has no
backtracking, so a match takes time linear in the name whatever the pattern. It reads Python's
syntax except backreferences and lookaround (refused here, with RE2's reason); ``\\w``, ``\\d``
and ``\\b`` are ASCII there, as parameter names are.

Globs use ``*`` (any run of characters but ``.`` in a dotted path), ``?`` (one character),
``[seq]`` / ``[!seq]`` (one character in / not in ``seq``, ranges like ``a-z``) and, in paths,
``**`` (any number of segments); they become RE2 patterns too.

Example:
    >>> bool(compile_regex(r"^(\\w+\\.?)*bias$").search("encoder.layer.0.attention.self.query.x"))
    False
    >>> bool(compile_glob_segment("1[01]", dotted=True).fullmatch("11"))
    True
"""

from __future__ import annotations

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


@lru_cache(maxsize=1024)
def compile_glob_segment(glob: str, dotted: bool) -> Any:
    """Compile one glob (``dotted``: ``*``, ``?`` and classes never match ``.``)."""
    return _compile(glob_to_regex_text(glob, dotted), f"glob {shorten(glob)}", _GLOB_ADVICE)


@lru_cache(maxsize=1024)
def compile_path_glob(glob: str) -> Any:
    """Compile a dotted-path glob: it matches a leaf's name or the path of a module above it.

    Example:
        >>> rx = compile_path_glob("encoder.**.b[01]")
        >>> [bool(rx.fullmatch(n)) for n in ("encoder.x.y.b1.w", "encoder.b0", "encoder.b2")]
        [True, True, False]
    """
    out = []
    segments = glob.split(".")
    for i, seg in enumerate(segments):
        if seg == "**":
            if len(segments) == 1:
                out.append("(?s:.)*")
            elif i == 0:
                out.append(r"(?:[^.]+\.)*")
            elif i == len(segments) - 1:
                out.append(r"(?:\.[^.]+)*")
            else:
                out.append(r"\.(?:[^.]+\.)*")
            continue
        piece = glob_to_regex_text(seg, dotted=True, whole=glob)
        prev_double = i > 0 and segments[i - 1] == "**"
        out.append(piece if i == 0 or prev_double else r"\." + piece)
    return _compile("".join(out) + r"(?:\..*)?", f"glob {shorten(glob)}", _GLOB_ADVICE)


_GLOB_ADVICE = ("Fix the glob: '*', '?', '[seq]' and '[!seq]' are wildcards; write '[[]' for a "
                "literal '['.")


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


def glob_to_regex_text(glob: str, dotted: bool, whole: str | None = None) -> str:
    """The RE2 pattern (for ``fullmatch``) of a glob without ``**``.

    Example:
        >>> glob_to_regex_text("a?[!0-3]*", dotted=True)
        'a[^.][^\\\\x{2e}\\\\x{30}-\\\\x{33}][^.]*'
    """
    out = []
    i = 0
    any_char = "[^.]" if dotted else "(?s:.)"
    while i < len(glob):
        ch = glob[i]
        if ch == "*":
            out.append(any_char + "*")
        elif ch == "?":
            out.append(any_char)
        elif ch == "[":
            cls, i = _char_class(glob, i, dotted, glob if whole is None else whole)
            out.append(cls)
            continue
        else:
            out.append(_literal(ch))
        i += 1
    return "".join(out)


def _char_class(glob: str, start: int, dotted: bool, whole: str) -> tuple[str, int]:
    """Translate the class at ``glob[start] == '['`` (fnmatch rules); return it and the end."""
    i = start + 1
    negate = i < len(glob) and glob[i] == "!"
    if negate:
        i += 1
    first = i
    while i < len(glob) and (glob[i] != "]" or i == first):
        i += 1
    if i >= len(glob):
        raise SelectorError(
            f"unclosed '[' in the glob {shorten(whole)}: '[seq]' matches one character of seq; "
            "write '[[]' for a literal '['."
        )
    body = glob[first:i]
    items = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            low, high = body[j], body[j + 2]
            if low > high:
                raise SelectorError(f"the range {low}-{high} in the glob {shorten(whole)} runs "
                                    f"backwards; write {high}-{low}.")
            items.append(f"{_hex(low)}-{_hex(high)}")
            j += 3
        else:
            items.append(_hex(body[j]))
            j += 1
    if negate:
        # A dotted path's class stands for one character of one segment: never a '.'.
        return "[^" + (_hex(".") if dotted else "") + "".join(items) + "]", i + 1
    return "[" + "".join(items) + "]", i + 1


def _hex(ch: str) -> str:
    return f"\\x{{{ord(ch):x}}}"


def _literal(ch: str) -> str:
    return ch if ch.isascii() and (ch.isalnum() or ch == "_") else _hex(ch)


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
