"""Settings of the offline evaluation: the `[evaluation]` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipelines.config import Section

Baseline = Literal["popularity", "item_knn", "ease", "als"]


def every_baseline() -> list[Baseline]:
    return ["popularity", "item_knn", "ease", "als"]


class EvaluationConfig(Section):
    """Which cut-offs, baselines and segments the evaluation report shows.

    The evaluation fits every model on the train and validation windows and scores the test
    window (full corpus, seen items excluded); baselines are fitted on the same interactions.
    """

    ks: list[int] = Field(default_factory=lambda: [10, 50, 100])
    """Cut-offs of every ranking metric."""
    beyond_k: int = Field(default=10, ge=1)
    """List length for coverage, novelty, diversity and popularity bias."""
    baselines: list[Baseline] = Field(default_factory=every_baseline)
    tune_baselines: bool = True
    """Choose each baseline's parameters on the validation window (grids in baselines.GRIDS);
    False uses the values below."""
    tune_users: int = Field(default=5_000, ge=100)
    """Validation users sampled for tuning."""
    tune_ease_items: int = Field(default=8_000, ge=1)
    """EASE's penalty is tuned on this many most interacted items (its cost grows with the
    cube of the items: 4 s at 8k, 40 s at 18k on 2 cores), then refitted on
    `ease_max_items` with the penalty chosen."""
    max_users: int | None = Field(default=5_000, ge=100)
    """Test users scored (a seeded random sample of them when there are more; None: all).
    Five thousand users put a paired interval of about +-0.005 around NDCG@10, and the
    evaluation's cost grows with the users it lists."""
    popularity_days: float | None = Field(default=7.0, gt=0)
    """Popularity counts the last days before the test start (None: the whole fit window)."""
    knn_neighbours: int = Field(default=200, ge=1)
    ease_lambda: float = Field(default=500.0, gt=0)
    """Steck's value for MovieLens-20M is a few hundred; tuning picks per data set."""
    ease_max_items: int = Field(default=20_000, ge=1)
    """EASE holds a dense item x item matrix: it covers this many most interacted items."""
    als_factors: int = Field(default=16, ge=1)
    als_regularization: float = Field(default=10.0, ge=0)
    als_iterations: int = Field(default=15, ge=1)
    als_alpha: float = Field(default=5.0, ge=0)
    activity_bins: list[int] = Field(default_factory=lambda: [1, 5, 20, 50])
    """Lower edges of the user activity segments (positives in the fit window); 0 = new."""
    min_users: int = Field(default=500, ge=1)
    """Fewer evaluated users than this and the report says the figures cannot decide between
    methods instead of naming a winner (a few dozen users' NDCG moves by chance alone)."""
    bootstrap_draws: int = Field(default=2000, ge=100)
    seed: int = 0
    enabled: bool = True
    """The nightly job's evaluation stage writes the HTML report (False: metrics.json only)."""

    @field_validator("ks")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("ks must be positive cut-offs")
        return sorted(set(v))
