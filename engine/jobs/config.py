"""Settings of the nightly job: the `[jobs]` section."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import Section


class JobsConfig(Section):
    """The `[jobs]` section."""

    k: int = Field(default=20, ge=1)
    """Products in each user's published list."""
    retention: int = Field(default=5, ge=1)
    """Published versions kept (the current one is never removed)."""
    gate_tolerance: float = Field(default=0.05, ge=0, le=1)
    """A new version is published only if no validation metric is worse than the live
    version's by more than this share (0.05: at most 5% lower)."""
    user_chunk: int = Field(default=5000, ge=1)
    """Users scored per chunk of the batch lists (memory stays flat as users grow)."""
    full_retrain_days: float = Field(default=7.0, gt=0)
    """`--incremental` retrains fully anyway once the live models are this many days old."""
    explain: bool = True
    """Write the `why` column (sources, feature contributions, rules) in the product lists."""
    rank_wait_minutes: float = Field(default=360.0, gt=0)
    """How long a rank of a multi-process run waits for the others (while rank 0 fits the
    models alone, the others wait at the next stage's barrier) before it gives up."""
