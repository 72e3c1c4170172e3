"""Settings of the pCTR model: the `[ads]` section (no LightGBM import here)."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import Section


class PctrConfig(Section):
    """The `[ads]` pCTR settings."""

    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    num_boost_round: int = Field(default=400, ge=1)
    min_data_in_leaf: int = Field(default=50, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    calibration_share: float = Field(default=0.3, gt=0, lt=1)
    """Share of the impressions (by user) held out to fit the calibration."""
    seed: int = 0
