"""What to say when a selector in a YAML plan is read as YAML syntax: quote it.

Selector strings collide with YAML's own syntax: ``group:-2:`` ends with a mapping colon, ``**``
starts an alias, ``!name:bias`` a tag. Unquoted, they give parser errors that never mention
selectors, so the message names the line and shows the rule quoted.

Example:
    >>> import yaml
    >>> text = "rules:\\n- unfreeze: group:-2:\\n"
    >>> try:
    ...     yaml.safe_load(text)
    ... except yaml.YAMLError as exc:
    ...     print(yaml_error_message(text, exc))
    plan is not valid YAML: mapping values are not allowed here, at line 2: '- unfreeze: group:-2:'. Quote the selector: unfreeze: 'group:-2:' (a selector that ends with ':', holds ': ' or starts with '*', '!' or '&' must be quoted in YAML).
"""

from __future__ import annotations

import re

import yaml

from .._errors import shorten

_RULE = re.compile(r"^\s*(?:-\s+)?(?P<action>freeze|unfreeze)\s*:\s+(?P<selector>[^'\"{\[\s].*?)"
                   r"\s*(?:\s#.*)?$")
_WHY = ("a selector that ends with ':', holds ': ' or starts with '*', '!' or '&' must be quoted "
        "in YAML")


def quote_hint(text: str, line: int) -> str | None:
    """How to quote the selector of the rule on ``line`` (0-based) of ``text``, if it has one.

    Example:
        >>> quote_hint("rules:\\n- freeze: **\\n", 1)
        "Quote the selector: freeze: '**' (a selector that ends with ':', holds ': ' or starts with '*', '!' or '&' must be quoted in YAML)"
    """
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return None
    rule = _RULE.match(lines[line])
    if rule:
        quoted = "'" + _cut(rule["selector"], 80).replace("'", "''") + "'"
        return f"Quote the selector: {rule['action']}: {quoted} ({_WHY})"
    if re.search(r"\b(un)?freeze\s*:", lines[line]):
        return f"Quote the selectors ({_WHY}), e.g. unfreeze: 'group:-2:'"
    return None


def yaml_error_message(text: str, exc: yaml.YAMLError) -> str:
    """A one-line message for ``exc``, raised while reading the plan ``text``."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    problem = problem or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    lines = text.splitlines()
    if mark is None or not 0 <= mark.line < len(lines):
        return f"plan is not valid YAML: {_cut(problem, 160)}."
    line = shorten(lines[mark.line].strip(), 120)
    message = f"plan is not valid YAML: {_cut(problem, 160)}, at line {mark.line + 1}: {line}"
    hint = quote_hint(text, mark.line)
    return f"{message}. {hint}." if hint else f"{message}."


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
