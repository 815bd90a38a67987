"""The selector string syntax, for YAML/JSON plans and the command line.

Grammar (whitespace between tokens is ignored)::

    expr   := term ('|' term)*
    term   := factor ('&' factor)*
    factor := '!' factor | '(' expr ')' | atom
    atom   := PREFIX ':' value | glob
    PREFIX := name | path | re | type | class | group | kind

A value is a run of characters other than whitespace and ``& | ! ( )``, or a quoted string
(``"..."``, ``'...'``, or ``/.../`` for regexes); commas separate alternatives
(``name:bias,weight``, ``kind:param,buffer``), and a quoted alternative is taken whole, commas
included (``name:"a,b",c``). A bare glob is a path glob (``encoder.layer.*``). Group indices
are ASCII digits; ``group:-2`` is refused as ambiguous (``group:-2:`` is the last two groups,
``group:-2:-1`` the one group second from the head).

Example:
    >>> str(parse("encoder.layer.* & !name:bias"))
    '(encoder.layer.* & !name:bias)'
    >>> str(parse("group:-2: | type:LayerNorm"))
    '(group:-2: | type:LayerNorm)'
    >>> parse('name:"a,b",c').names
    ('a,b', 'c')
"""

from __future__ import annotations

import re

from .._errors import SelectorError, SelectorSyntaxError, shorten
from . import selectors as s

PREFIXES = ("name", "path", "re", "type", "class", "group", "kind")
_OPERATORS = "&|!()"
_QUOTES = {'"': '"', "'": "'", "/": "/"}
# Prefixes whose value is one string (a regex may hold commas, a group key is one key).
_SINGLE_VALUE = ("re", "group")
# Nesting of parentheses and '!' allowed in one selector: deeper text is refused with a
# SelectorSyntaxError long before Python's recursion limit.
MAX_DEPTH = 100
_WINDOW = 60


def parse(text: str) -> s.Selector:
    """Parse a selector string into a :class:`~frostline.core.selectors.Selector`.

    Raises:
        SelectorSyntaxError: with the position and what was expected.
    """
    if not isinstance(text, str):
        raise SelectorSyntaxError(f"expected a selector string, got {type(text).__name__}.")
    parser = _Parser(text)
    if not text.strip():
        parser.fail("a selector", "an empty string")
    selector = parser.expr()
    parser.skip_space()
    if parser.pos < len(text):
        parser.fail("'&', '|' or the end of the selector", repr(text[parser.pos]))
    return selector


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, expected: str, found: str) -> None:
        # Echo a window of the text around the position: a selector may be megabytes long.
        start = max(0, self.pos - _WINDOW)
        shown = self.text[start:self.pos + _WINDOW // 2]
        before = "..." if start else ""
        after = "..." if self.pos + _WINDOW // 2 < len(self.text) else ""
        caret = " " * (len(before) + self.pos - start) + "^"
        raise SelectorSyntaxError(
            f"bad selector at position {self.pos}: expected {expected}, found {found}\n"
            f"  {before}{shown}{after}\n  {caret}\n"
            "Selectors look like 'encoder.layer.*', 'name:bias', 'type:LayerNorm', "
            "'group:-2:', combined with &, |, ! and parentheses."
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expr(self) -> s.Selector:
        parts = [self.term()]
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else s.Or(tuple(parts))

    def term(self) -> s.Selector:
        parts = [self.factor()]
        while self.peek() == "&":
            self.pos += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else s.And(tuple(parts))

    def factor(self) -> s.Selector:
        ch = self.peek()
        if ch in "!(" and ch:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"at most {MAX_DEPTH} nested parentheses and '!'", "deeper nesting")
            try:
                return self._nested(ch)
            finally:
                self.depth -= 1
        if ch == "" or ch in "&|)":
            self.fail("a selector (a glob, 'prefix:value', '!' or '(')", self._found())
        return self.atom()

    def _nested(self, ch: str) -> s.Selector:
        self.pos += 1
        if ch == "!":
            return s.Not(self.factor())
        inner = self.expr()
        if self.peek() != ")":
            self.fail("')'", self._found())
        self.pos += 1
        return inner

    def _found(self) -> str:
        return repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"

    def atom(self) -> s.Selector:
        start = self.pos
        word = self._word(stop_at_colon=True)
        if self.pos < len(self.text) and self.text[self.pos] == ":":
            if word not in PREFIXES:
                self.pos = start
                self.fail(f"a prefix among {', '.join(PREFIXES)}", shorten(word))
            self.pos += 1
            value_pos = self.pos
            if word in _SINGLE_VALUE:
                quoted = self.pos < len(self.text) and self.text[self.pos] in "\"'"
                value = self._value(allow_regex_slash=(word == "re"))
                if value == "":
                    self.fail(f"a value after '{word}:'", self._found())
                return self._build(word, [value], value_pos, quoted)
            items = self._items()
            if items == [""]:
                self.fail(f"a value after '{word}:'", self._found())
            return self._build(word, items, value_pos)
        if word == "":
            self.fail("a selector", self._found())
        return self._build("path", word.split(","), start)

    def _word(self, stop_at_colon: bool, stop_at_comma: bool = False) -> str:
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace() or ch in _OPERATORS or (stop_at_colon and ch == ":") or (
                    stop_at_comma and ch == ","):
                break
            self.pos += 1
        return self.text[start:self.pos]

    def _items(self) -> list[str]:
        """Comma-separated alternatives; a quoted one is taken whole, commas included."""
        items = []
        while True:
            if self.pos < len(self.text) and self.text[self.pos] in "\"'":
                items.append(self._quoted())
            else:
                items.append(self._word(stop_at_colon=False, stop_at_comma=True))
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            return items

    def _value(self, allow_regex_slash: bool) -> str:
        if self.pos < len(self.text) and self.text[self.pos] in _QUOTES and (
            self.text[self.pos] != "/" or allow_regex_slash
        ):
            return self._quoted()
        return self._word(stop_at_colon=False)

    def _quoted(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in (
                quote, "\\") and quote != "/":
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == "\\" and quote == "/" and self.pos + 1 < len(self.text) and (
                self.text[self.pos + 1] == "/"
            ):
                out.append("/")
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        self.pos = start
        self.fail(f"a closing {quote}", "the end of the selector")
        return ""  # unreachable: fail raises

    def _build(self, prefix: str, parts: list[str], value_pos: int, quoted: bool = False
               ) -> s.Selector:
        try:
            if prefix == "re":
                return s.regex(parts[0])
            if prefix == "group":
                # A quoted value is always a group name, even one that looks like an index.
                return s.group(parts[0] if quoted else _group_key(parts[0]))
            if not all(parts):
                raise SelectorError("empty alternative between commas")
            if prefix == "name":
                return s.name(*parts)
            if prefix == "path":
                return s.path(*parts)
            if prefix == "type":
                return s.module_type(*parts)
            if prefix == "class":
                return s.class_name(*parts)
            kinds = [s.kind(k) for k in dict.fromkeys(parts)]
            return kinds[0] if len(kinds) == 1 else s.Or(tuple(kinds))
        except SelectorError as exc:
            self.pos = value_pos
            self.fail(f"a valid value for '{prefix}:' ({exc})", shorten(",".join(parts)))
            raise  # unreachable: fail raises


_INDEX = re.compile(r"[+-]?[0-9]+")
_MAX_INDEX_DIGITS = 9


def _index(piece: str) -> int | None:
    """A group index written in ASCII digits, None for text that is no number at all."""
    if _INDEX.fullmatch(piece):
        digits = piece.lstrip("+-")
        if len(digits) > _MAX_INDEX_DIGITS:
            raise SelectorError(f"group index {shorten(piece, 20)} is too large")
        if piece.startswith("-") and int(digits) == 0:
            raise SelectorError("'-0' is 0, the first group from the input; write 0, or -k "
                                "for the k-th group from the head")
        return int(piece)
    try:
        int(piece)
    except ValueError:
        return None
    # int() also reads '1_0', ' 3' and digits of other scripts ('٣'): never an index here.
    raise SelectorError(f"{shorten(piece, 20)} is not a group index: write indices with the "
                        "digits 0-9 only (no '_' or spaces), or quote a group name: "
                        f'group:"{piece if len(piece) <= 20 else piece[:20] + "..."}"')


def _group_key(value: str) -> int | slice | str:
    if ":" not in value:
        index = _index(value)
        if index is None:
            return value
        if index <= -2:
            raise SelectorError(
                f"'group:{index}' is ambiguous: it is one group, the {_ordinal(-index)} from "
                f"the head, not the last {-index}. Write 'group:{index}:' for the last {-index} "
                f"groups, or 'group:{index}:{index + 1 or ''}' for that one group"
            )
        return index
    pieces = value.split(":")
    if len(pieces) > 3:
        raise SelectorError("a group slice has at most start:stop:step")
    numbers = [_index(p) if p else None for p in pieces]
    if any(n is None for n, p in zip(numbers, pieces) if p):
        raise SelectorError("a group slice holds integers, e.g. group:-2: or group:1:4")
    if len(numbers) == 3 and numbers[2] == 0:
        raise SelectorError("a group slice step cannot be zero")
    return slice(*numbers)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
