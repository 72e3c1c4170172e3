"""Settings of the ads: the `[ads]` section (the pCTR model) and the `[auction]` section
(no LightGBM import here)."""

from __future__ import annotations

from pydantic import Field

from pipelines.config import Section


class AdsConfig(Section):
    """The `[ads]` pCTR settings."""

    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.05, gt=0)
    num_boost_round: int = Field(default=400, ge=1)
    min_data_in_leaf: int = Field(default=50, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    calibration_share: float = Field(default=0.3, gt=0, lt=1)
    """Share of the impressions (by user) held out to fit the calibration."""
    seed: int = 0


class AuctionConfig(Section):
    """The `[auction]` section."""

    ads_per_user: int = Field(default=3, ge=1)
    reserve_ecpm: float = Field(default=0.5, ge=0)
    """Lowest eCPM (expected revenue per thousand impressions, pCTR x bid x 1000) an ad needs."""
    frequency_cap: int = Field(default=3, ge=1)
    """An ad already shown this many times to a user today is not shown to them again."""
    pacing: bool = True
    candidates: int = Field(default=120, ge=0)
    """Ads scored by the pCTR model per user: the best by bid x past click rate overall and
    in the user's top categories (`engine.ads.lists.Shortlist`); 0 scores every ad in
    flight (users x ads rows)."""
    chunk: int = Field(default=1000, ge=1)
    seed: int = 0
