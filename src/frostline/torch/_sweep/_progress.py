"""A rich progress bar with the time left, on stderr, shown on terminals only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[[str], None]


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Advance]:
    """Yields ``advance(label)``, to call once per training epoch.

    The bar is drawn only when ``enabled`` and stderr is a terminal (never under pytest's
    captured output, nor in pipes).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task(description, total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=f"{description} [{label}]")

        yield advance
