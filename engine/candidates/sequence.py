"""Sequential signal: what follows the user's last items. Each user's positives in time order
give transitions a -> b for b within `transition_span` positions after a (a gap of g counts
1/g), summed over users and divided by all that follows a: an estimate of P(next = b | a) that
knows order, which co-occurrence does not (sequels, refills, the next part of a set). A user is
scored by the transitions out of their last items, the latest weighing most."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext
from engine.lookup import ByKey
from pipelines.sums import exact_sum


def transitions(pos: pl.LazyFrame, *, span: int, neighbours: int) -> pl.LazyFrame:
    """item_idx, neighbour, weight: each item's `neighbours` likeliest next items."""
    seq = (
        pos.select("user_idx", "item_idx", "ts")
        .sort("user_idx", "ts", maintain_order=True)
        .filter(pl.col("item_idx") != pl.col("item_idx").shift(1).over("user_idx").fill_null(-1))
    )
    pairs = pl.concat(
        [
            seq.select(
                "item_idx",
                pl.col("item_idx").shift(-g).over("user_idx").alias("neighbour"),
                pl.lit(1.0 / g).alias("weight"),
            )
            for g in range(1, span + 1)
        ]
    )
    counts = (
        pairs.filter(
            pl.col("neighbour").is_not_null() & (pl.col("neighbour") != pl.col("item_idx"))
        )
        .group_by("item_idx", "neighbour")
        .agg(exact_sum(pl.col("weight")).alias("weight"))
    )
    return (
        counts.with_columns(pl.col("weight") / pl.col("weight").sum().over("item_idx"))
        .sort(["item_idx", "weight", "neighbour"], descending=[False, True, False])
        .group_by("item_idx", maintain_order=True)
        .head(neighbours)
    )


def transition_table(ctx: CandidateContext) -> ByKey:
    """The context's transitions, by item, built once."""
    c = ctx.cfg
    return ctx.cache.transitions.get(
        lambda: ByKey(
            transitions(
                ctx.fs.window_interactions().lazy(), span=c.transition_span, neighbours=c.neighbours
            ).collect(),
            "item_idx",
        ),
    )


def transition_scores(ctx: CandidateContext, users: np.ndarray) -> pl.DataFrame:
    """user_idx, item_idx, score: every item one step from the users' last items."""
    recent = ctx.recent(users)
    table = transition_table(ctx).rows(recent["item_idx"].to_numpy())
    return (
        recent.join(table, on="item_idx")
        .group_by("user_idx", pl.col("neighbour").alias("item_idx"))
        .agg((pl.col("weight") * pl.col("weight_right")).sum().round(9).alias("score"))
    )
    # rounded: a threaded join feeds the sum in any order, and ties must rank the same


class TransitionSource:
    """Candidates that followed the user's last items in other users' histories."""

    name = "next"

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        transition_table(ctx)

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        return self.ctx.finish(transition_scores(self.ctx, users), self.ctx.cfg.transitions)
