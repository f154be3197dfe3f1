"""Progress bars for long CLI work (rich), on stderr so that stdout stays the result: off
under --json and whenever stderr is not a terminal (a pipe, a file, CI logs)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


@contextmanager
def progress(description: str, total: int, *, quiet: bool = False, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """A bar of `total` steps with elapsed time and ETA; yields `advance(n)`."""
    console = Console(stderr=True)
    enabled = not quiet and console.is_terminal and not console.is_dumb_terminal
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                   transient=True, disable=not enabled)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
