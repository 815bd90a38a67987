"""A griffe extension for the API reference: frostline's docstrings as griffe reads them.

frostline's docstrings say ``Example:`` (griffe reads only ``Examples:`` as runnable examples,
and would render ``>>>`` lines as Markdown quotes), and document parameters that share a
meaning on one line (``weight_decay, layer_decay: as for ...``), which griffe reads as one
unknown parameter. Both are rewritten before parsing; nothing else changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_SHARED = re.compile(r"^(\s+)(\w+(?:,\s*\w+)+):(.*)$")
_WRAPPED = re.compile(r"^(\s+)(\w+(?:,\s*\w+)*,)\n\s+(\w+(?:,\s*\w+)*:)", re.M)


def _rewrite(text: str) -> str:
    text = _EXAMPLE.sub(r"\1Examples:", text)
    # A list of shared names may wrap: "a, b, c,\n    d: as for ..." is one line to griffe.
    text = _WRAPPED.sub(r"\1\2 \3", text)
    out = []
    for line in text.splitlines():
        shared = _SHARED.match(line)
        if shared:
            indent, names, description = shared.groups()
            out += [f"{indent}{name.strip()}:{description}" for name in names.split(",")]
        else:
            out.append(line)
    return "\n".join(out)


class FrostlineDocstrings(griffe.Extension):
    """Rewrite every docstring as above when griffe visits its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj.docstring.value)
