"""Rich progress bars for the library's `report(step)` callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.progress import Report


@contextmanager
def steps(title: str, total: int, console: Console) -> Iterator[Report]:
    """A bar that advances one step per report; the step's name is shown beside it."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[step]}"), console=console,
                  transient=False) as bar:
        task = bar.add_task(title, total=total, step="")
        started = False

        def report(step: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, step=step)

        yield report
        bar.update(task, completed=total, step="done")
