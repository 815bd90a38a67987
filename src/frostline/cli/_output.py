"""Printing results: plain text through rich, or JSON for scripts; progress bars on stderr."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (the only thing printed there with ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar with the time left, on stderr (shown on terminals only); yields
    ``advance(label)``."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=f"{description} [{label}]")

        yield advance
