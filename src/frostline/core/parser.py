"""The selector string syntax, for YAML/JSON plans and the command line.

Grammar (whitespace between tokens is ignored)::

    expr   := term ('|' term)*
    term   := factor ('&' factor)*
    factor := '!' factor | '(' expr ')' | atom
    atom   := PREFIX ':' value | glob
    PREFIX := name | path | re | type | class | group | kind

A value is a run of characters other than whitespace and ``& | ! ( )``, or a quoted string
(``"..."``, ``'...'``, or ``/.../`` for regexes); commas separate alternatives
(``name:bias,weight``). A bare glob is a path glob (``encoder.layer.*``).

Example:
    >>> str(parse("encoder.layer.* & !name:bias"))
    '(encoder.layer.* & !name:bias)'
    >>> str(parse("group:-2: | type:LayerNorm"))
    '(group:-2: | type:LayerNorm)'
"""

from __future__ import annotations

from .._errors import SelectorError, SelectorSyntaxError, shorten
from . import selectors as s

PREFIXES = ("name", "path", "re", "type", "class", "group", "kind")
_OPERATORS = "&|!()"
_QUOTES = {'"': '"', "'": "'", "/": "/"}
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
            quoted = self.pos < len(self.text) and self.text[self.pos] in "\"'"
            value = self._value(allow_regex_slash=(word == "re"))
            if value == "":
                self.fail(f"a value after '{word}:'", self._found())
            return self._build(word, value, value_pos, quoted)
        if word == "":
            self.fail("a selector", self._found())
        return self._build("path", word, start)

    def _word(self, stop_at_colon: bool) -> str:
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace() or ch in _OPERATORS or (stop_at_colon and ch == ":"):
                break
            self.pos += 1
        return self.text[start:self.pos]

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

    def _build(self, prefix: str, value: str, value_pos: int, quoted: bool = False
               ) -> s.Selector:
        try:
            if prefix == "re":
                return s.regex(value)
            if prefix == "group":
                # A quoted value is always a group name, even one that looks like an index.
                return s.group(value if quoted else _group_key(value))
            parts = _split_commas(value)
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
            return s.kind(value)
        except SelectorError as exc:
            self.pos = value_pos
            self.fail(f"a valid value for '{prefix}:' ({exc})", shorten(value))
            raise  # unreachable: fail raises


def _split_commas(value: str) -> list[str]:
    return value.split(",")


def _group_key(value: str) -> int | slice | str:
    if ":" not in value:
        try:
            return int(value)
        except ValueError:
            return value
    pieces = value.split(":")
    if len(pieces) > 3:
        raise SelectorError("a group slice has at most start:stop:step")
    try:
        numbers = [int(p) if p.strip() else None for p in pieces]
    except ValueError:
        raise SelectorError("a group slice holds integers, e.g. group:-2: or group:1:4") from None
    if len(numbers) == 3 and numbers[2] == 0:
        raise SelectorError("a group slice step cannot be zero")
    return slice(*numbers)
