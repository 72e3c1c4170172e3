"""Progress reporting without printing: library functions call `report(step)`; the CLI turns the
calls into a progress bar. A function that reports declares how many steps it takes."""

from __future__ import annotations

from collections.abc import Callable

Report = Callable[[str], None]


def silent(_: str) -> None:
    """The default reporter: report nothing."""
