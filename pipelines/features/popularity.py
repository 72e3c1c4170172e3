"""Popularity and recency of items, and users' affinity to categories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from pipelines.sums import exact_sum

DAY_US = 86_400 * 1_000_000


def _days_before(at: datetime) -> pl.Expr:
    return (pl.lit(at) - pl.col("ts")).dt.total_microseconds() / DAY_US


def item_popularity(
    pos: pl.LazyFrame, *, at: datetime, windows_days: Sequence[float]
) -> pl.LazyFrame:
    """Per item: interaction counts over the last N days for each window, all-time count and
    weight, and days since the last interaction (as of `at`)."""
    age = _days_before(at)
    windows = [(age < w).sum().cast(pl.Int64).alias(f"count_{w:g}d") for w in windows_days]
    return (
        pos.filter(pl.col("ts") < at)
        .group_by("item_idx")
        .agg(
            pl.len().cast(pl.Int64).alias("count_all"),
            pl.col("weight").sum().alias("weight_all"),
            *windows,
            age.min().alias("days_since_last"),
        )
        .sort("item_idx")
    )


def user_category_affinity(
    pos: pl.LazyFrame,
    item_category: pl.LazyFrame,
    *,
    at: datetime,
    half_life_days: float,
    category: str = "top_category",
) -> pl.LazyFrame:
    """Per (user, category): time-decayed interaction weight and its share of the user's total.

    `item_category` maps item_idx to the `category` column (e.g. top or leaf category index).
    """
    decay = pl.col("weight") * (0.5 ** (_days_before(at) / half_life_days))
    per = (
        pos.filter(pl.col("ts") < at)
        .join(item_category.select("item_idx", category), on="item_idx")
        .group_by("user_idx", category)
        .agg(exact_sum(decay).alias("affinity"))
    )
    return per.with_columns(
        (pl.col("affinity") / pl.col("affinity").sum().over("user_idx")).alias("share")
    ).sort("user_idx", category)
