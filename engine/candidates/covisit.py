"""Item-to-item co-visitation: items one user touched within a few hours of each other,
counted with a time decay (recent co-visits weigh more), built with Polars. Users are then
scored by the neighbours of their recent items, the latest item weighing most."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from engine.candidates.config import CandidatesConfig
from engine.candidates.context import CandidateContext
from engine.lookup import ByKey
from pipelines.sums import exact_sum

DAY_US = 86_400 * 1_000_000


def covisitation(pos: pl.LazyFrame, *, at: datetime, cfg: CandidatesConfig) -> pl.LazyFrame:
    """item_idx, neighbour, weight: each item's `cfg.neighbours` strongest co-visited items."""
    last = (
        pos.group_by("user_idx", "item_idx")
        .agg(pl.col("ts").max())
        .sort("user_idx", "ts")
        .group_by("user_idx", maintain_order=True)
        .tail(cfg.covisit_user_events)
    )
    window_us = int(cfg.covisit_window_hours * 3600 * 1_000_000)
    later = pl.max_horizontal("ts", "ts_b")
    age_days = (pl.lit(at) - later).dt.total_microseconds() / DAY_US
    pairs = (
        last.join(last, on="user_idx", suffix="_b")
        .filter(
            (pl.col("item_idx") != pl.col("item_idx_b"))
            & ((pl.col("ts") - pl.col("ts_b")).dt.total_microseconds().abs() <= window_us)
        )
        .group_by("item_idx", pl.col("item_idx_b").alias("neighbour"))
        .agg(exact_sum(0.5 ** (age_days / cfg.covisit_half_life_days)).alias("weight"))
    )
    return (
        pairs.sort(["item_idx", "weight", "neighbour"], descending=[False, True, False])
        .group_by("item_idx", maintain_order=True)
        .head(cfg.neighbours)
    )


class CovisitSource:
    """Candidates from co-visitation neighbours of the user's recent items."""

    name = "covisit"

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        self.table = ByKey(
            covisitation(ctx.fs.window_interactions().lazy(), at=ctx.fs.as_of, cfg=ctx.cfg).collect(
                engine="streaming"
            ),
            "item_idx",
        )

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        recent = self.ctx.recent(users)
        table = self.table.rows(recent["item_idx"].to_numpy())
        scored = (
            recent.join(table, on="item_idx")
            .group_by("user_idx", pl.col("neighbour").alias("item_idx"))
            .agg(exact_sum(pl.col("weight") * pl.col("weight_right")).alias("score"))
        )
        return self.ctx.finish(scored, self.ctx.cfg.covisit)
