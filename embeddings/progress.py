"""What the training loop reports after each step (kept free of torch imports, so the CLI can
draw bars without loading the model stack)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepInfo:
    """Shown by the progress bar after each step (rank 0 only)."""

    epoch: int
    step: int
    steps: int
    loss: float
    examples_per_s: float
