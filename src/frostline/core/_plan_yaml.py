"""What to say when a YAML plan does not parse: the line, and how to quote a selector.

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

_RULE = re.compile(r"^\s*(?:-\s+)?(?P<action>freeze|unfreeze)\s*:\s+(?P<selector>[^'\"{\[\s].*?)"
                   r"\s*(?:\s#.*)?$")
_WHY = ("a selector that ends with ':', holds ': ' or starts with '*', '!' or '&' must be quoted "
        "in YAML")


def yaml_error_message(text: str, exc: yaml.YAMLError) -> str:
    """A one-line message for ``exc``, raised while reading the plan ``text``."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    problem = problem or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    lines = text.splitlines()
    if mark is None or not 0 <= mark.line < len(lines):
        return f"plan is not valid YAML: {problem}."
    line = lines[mark.line]
    message = f"plan is not valid YAML: {problem}, at line {mark.line + 1}: {line.strip()!r}"
    rule = _RULE.match(line)
    if rule:
        quoted = "'" + rule["selector"].replace("'", "''") + "'"
        return f"{message}. Quote the selector: {rule['action']}: {quoted} ({_WHY})."
    if re.search(r"\b(un)?freeze\s*:", line):
        return f"{message}. Quote the selectors ({_WHY}), e.g. unfreeze: 'group:-2:'."
    return f"{message}."
