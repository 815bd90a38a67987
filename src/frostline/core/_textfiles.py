"""Reading plan files safely: bounded size and depth, known encodings, YAML without aliases.

A plan file is small, shallow data. Anything else is refused with a :class:`PlanError` before
it can cost time or memory:

* size: at most :data:`MAX_BYTES` (1 MiB); depth: at most :data:`MAX_DEPTH` nested
  collections (deep nesting would exhaust Python's recursion limit);
* YAML anchors and aliases (``&a`` / ``*a``): a few hundred bytes of nested aliases expand to
  gigabytes, so they are refused outright (a plan never needs them), as are explicit tags
  (``!!python/object``, ``!!binary``, ``!!int``): a plan holds plain values;
* encodings: UTF-8 with or without a byte-order mark, and UTF-16 / UTF-32 with one; any other
  bytes are refused, naming the first bad byte;
* numbers Python cannot read (integers over 4,300 digits), invalid dates and other values the
  YAML or JSON reader refuses.

Example:
    >>> load_yaml_text("rules: [{freeze: '**'}]")
    {'rules': [{'freeze': '**'}]}
    >>> load_yaml_text("a: &x [1]\\nb: *x")
    Traceback (most recent call last):
    ...
    frostline._errors.PlanError: plan YAML uses an anchor or alias ('&x' at line 1, column 4); ...
"""

from __future__ import annotations

import codecs
import json
import os
from typing import Any

import yaml

from .._errors import PlanError, shorten
from ._plan_yaml import quote_hint, yaml_error_message

MAX_BYTES = 1 << 20
MAX_DEPTH = 32

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def read_plan_file(path: str | os.PathLike[str]) -> str:
    """The text of a plan file, read as bytes and decoded (see :func:`decode`)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        # A path is shown whole (the system bounds its length): the user needs all of it.
        raise PlanError(f"cannot read plan file {shorten(name, 4096)}: "
                        f"{exc.strerror or type(exc).__name__}.") from None
    return decode(data, name)


def decode(data: bytes, source: str = "the plan") -> str:
    """Decode plan bytes: UTF-8 (a BOM is dropped), or UTF-16/32 when a BOM says so.

    Example:
        >>> decode("rules: []".encode("utf-16"))
        'rules: []'
    """
    _check_size(len(data), source)
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1]
        hint = (" It holds NUL bytes: UTF-16/32 without a byte-order mark?" if b"\0"
                in data[:4096] else "")
        raise PlanError(
            f"{shorten(source)} is not {encoding.upper().removesuffix('-SIG')} text: byte "
            f"{bad!r} at position {exc.start} cannot be decoded.{hint} Save the plan as UTF-8."
        ) from None
    if "\0" in text:
        raise PlanError(f"{shorten(source)} holds NUL characters: it is not a text file, or it "
                        "is UTF-16/32 without a byte-order mark. Save the plan as UTF-8.")
    return text.removeprefix("\ufeff")


def _check_size(size: int, source: str) -> None:
    if size > MAX_BYTES:
        raise PlanError(f"{shorten(source)} is larger than {MAX_BYTES} bytes; a plan is a few "
                        "rules. Check that this is the plan file.")


def _text(text: str | bytes, source: str) -> str:
    if isinstance(text, bytes):
        return decode(text, source)
    if not isinstance(text, str):
        raise PlanError(f"expected the plan as text (str or bytes), got {type(text).__name__}.")
    _check_size(len(text), source)
    return text.removeprefix("\ufeff")


class _PlanLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases and bounds the nesting depth."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            _unquoted_selector(mark)
            raise PlanError(
                f"plan YAML uses an anchor or alias ({shorten(sign + str(event.anchor), 40)} at "
                f"line {mark.line + 1}, column {mark.column + 1}); they are not accepted in plan "
                "files (nested aliases expand without bound). Write the values out."
            )
        tag = getattr(event, "tag", None)
        if tag is not None and not isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            _unquoted_selector(mark)
            raise PlanError(
                f"plan YAML uses the explicit tag {shorten(tag, 40)} (line {mark.line + 1}, "
                f"column {mark.column + 1}); plan files hold plain strings, booleans, numbers, "
                "lists and mappings: remove the tag."
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                _too_deep()
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _unquoted_selector(mark: Any) -> None:
    """Raise the quoting hint when YAML syntax (``*``, ``&``, ``!``) starts a rule's selector."""
    buffer = getattr(mark, "buffer", None)
    if not isinstance(buffer, str):
        return
    hint = quote_hint(buffer, mark.line)
    if hint is not None:
        line = shorten(buffer.splitlines()[mark.line].strip(), 120)
        raise PlanError(f"plan YAML reads a selector as YAML syntax at line {mark.line + 1}: "
                        f"{line}. {hint}.")


def _too_deep() -> None:
    raise PlanError(f"the plan nests more than {MAX_DEPTH} levels of lists and mappings; a plan "
                    "is a mapping of rules and flags, a few levels deep.")


def load_yaml_text(text: str | bytes, source: str = "the plan") -> Any:
    """Parse plan YAML (safe tags only, no aliases, bounded size and depth) to plain data.

    Raises:
        PlanError: for every problem, with a short message.
    """
    text = _text(text, source)
    try:
        return yaml.load(text, Loader=_PlanLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PlanError(yaml_error_message(text, exc)) from None
    except (ValueError, OverflowError, ArithmeticError, LookupError, TypeError) as exc:
        # A scalar YAML resolves but Python cannot build: an integer of more than 4,300 digits,
        # a date such as 2024-13-45.
        raise PlanError(f"plan YAML holds a value that cannot be read: {_cut(str(exc))}.") from None
    except RecursionError:
        _too_deep()


def load_json_text(text: str | bytes, source: str = "the plan") -> Any:
    """Parse plan JSON (bounded size and depth) to plain data.

    Raises:
        PlanError: for every problem, with a short message.
    """
    text = _text(text, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"plan is not valid JSON: {_cut(str(exc))}.") from None
    except ValueError as exc:  # integers over 4,300 digits
        raise PlanError(f"plan JSON holds a value that cannot be read: {_cut(str(exc))}.") from None
    except RecursionError:
        _too_deep()
    check_depth(data)
    return data


def check_depth(data: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse lists and mappings nested deeper than ``limit`` (without recursing)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            _too_deep()
        stack.extend((child, depth + 1) for child in children)


def _cut(text: str) -> str:
    return text if len(text) <= 160 else text[:160] + "..."
