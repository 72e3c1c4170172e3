"""Per-user interaction history: which events count, and the last N items in time order."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from pipelines.config import EventName


def positives(lf: pl.LazyFrame, weights: Mapping[EventName, float]) -> pl.LazyFrame:
    """Keep the events that signal interest (weight > 0) and attach their weight."""
    w = {k: float(v) for k, v in weights.items() if v > 0}
    return lf.filter(pl.col("event").is_in(list(w))).with_columns(
        pl.col("event").replace_strict(w, return_dtype=pl.Float64).alias("weight")
    )


def user_history(pos: pl.LazyFrame, *, length: int) -> pl.LazyFrame:
    """Each user's last `length` distinct items, oldest first, with their last interaction time.

    Repeated events on one item (view, add_to_cart, purchase) collapse into one entry at the
    latest time, so the bag holds `length` different items.
    """
    last = pos.group_by("user_idx", "item_idx").agg(pl.col("ts").max())
    return (
        last.sort("user_idx", "ts", "item_idx")
        .group_by("user_idx", maintain_order=True)
        .agg(
            pl.col("item_idx").tail(length).alias("history"),
            pl.col("ts").tail(length).alias("history_ts"),
        )
    )
