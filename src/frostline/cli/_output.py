"""Printing results: plain text, or JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the only thing printed there with ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")
