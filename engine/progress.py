"""Rich progress bars for the library's `report(step)` callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from embeddings.progress import StepInfo
from pipelines.progress import Report


@contextmanager
def steps(title: str, total: int, console: Console, *, enabled: bool = True) -> Iterator[Report]:
    """A bar that advances one step per report; the step's name is shown beside it (not shown
    when not `enabled`: the ranks of a multi-process job other than the first)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[step]}"),
        console=console,
        transient=False,
        disable=not enabled,
    ) as bar:
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


@contextmanager
def training_bar(console: Console, *, enabled: bool = True) -> Iterator[Callable[[StepInfo], None]]:
    """One bar per epoch showing steps, the running loss and examples/s."""
    if not enabled:
        yield lambda _: None
        return
    with Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:,.0f} examples/s"),
        console=console,
    ) as bar:
        tasks: dict[int, TaskID] = {}

        def progress(s: StepInfo) -> None:
            if s.epoch not in tasks:
                tasks[s.epoch] = bar.add_task(
                    "train", total=s.steps, epoch=s.epoch + 1, loss=s.loss, rate=0.0
                )
            bar.update(tasks[s.epoch], completed=s.step, loss=s.loss, rate=s.examples_per_s)

        yield progress
