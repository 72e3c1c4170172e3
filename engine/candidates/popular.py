"""Candidates that need no model: trending items in the user's favourite categories, the
user's own recent items (where people come back to things), and for users with no history
the items popular among users with the same attributes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext
from engine.lookup import ByKey
from pipelines.sums import exact_sum


def _users(users: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"user_idx": users.astype(np.int64)})


class TrendingSource:
    """Items with the most interactions in the last `trending_days`, within each of the user's
    `top_categories` (by time-decayed affinity), scored count x the category's share."""

    name = "trending"

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        cfg, fs = ctx.cfg, ctx.fs
        since = fs.as_of - timedelta(days=cfg.trending_days)
        counts = (
            fs.window_interactions()
            .filter(pl.col("ts") >= since)
            .group_by("item_idx")
            .agg(pl.len().alias("count"))
            .join(fs.items.select("item_idx", "top_category", "kind", "available"), on="item_idx")
            .filter((pl.col("kind") == "product") & pl.col("available"))
        )
        # enough per category to survive the removal of what each user has seen
        self.by_category = (
            counts.sort(["top_category", "count", "item_idx"], descending=[False, True, False])
            .group_by("top_category", maintain_order=True)
            .head(cfg.trending * 3)
            .select("top_category", "item_idx", pl.col("count").cast(pl.Float64))
        )
        self.top = ByKey(
            fs.affinity.sort(["user_idx", "share", "top_category"], descending=[False, True, False])
            .group_by("user_idx", maintain_order=True)
            .head(cfg.top_categories)
            .select("user_idx", "top_category", "share")
        )

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        scored = (
            self.top.rows(users)
            .join(self.by_category, on="top_category")
            .group_by("user_idx", "item_idx")
            .agg(exact_sum(pl.col("count") * pl.col("share")).alias("score"))
        )
        return self.ctx.finish(scored, self.ctx.cfg.trending)


class RepeatSource:
    """The user's own history, the most recent first (seen items are the point here)."""

    name = "repeat"

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        n = self.ctx.cfg.repeat
        hist = (
            self.ctx.history_of(users)
            .select("user_idx", pl.col("history").list.tail(n).alias("item_idx"))
            .explode("item_idx")
            .drop_nulls("item_idx")
            .with_columns(
                pl.int_range(1, pl.len() + 1).over("user_idx").cast(pl.Float64).alias("score")
            )
        )
        return self.ctx.finish(hist, n, drop_seen=False)


class ColdUserSource:
    """For users with no history: items popular among users who share their attributes
    (each attribute token votes with the item's share of that token's interactions), plus
    overall popularity for users with no attributes either."""

    name = "cold_user"

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        fs = ctx.fs
        pos = fs.window_interactions().select("user_idx", "item_idx")
        tokens = fs.users.select("user_idx", "attr_tok").explode("attr_tok").drop_nulls()
        per_token = (
            pos.join(tokens, on="user_idx")
            .group_by("attr_tok", "item_idx")
            .agg(pl.len().alias("n"))
            .with_columns((pl.col("n") / pl.col("n").sum().over("attr_tok")).alias("share"))
        )
        keep = ctx.cfg.cold_user * 3
        self.per_token = (
            per_token.sort(["attr_tok", "share", "item_idx"], descending=[False, True, False])
            .group_by("attr_tok", maintain_order=True)
            .head(keep)
            .select("attr_tok", "item_idx", "share")
        )
        overall = pos.group_by("item_idx").agg(pl.len().alias("n"))
        self.overall = (
            overall.with_columns((pl.col("n") / pl.col("n").sum()).alias("share"))
            .sort(["share", "item_idx"], descending=[True, False])
            .head(keep)
            .select("item_idx", "share")
        )
        self.tokens = ByKey(tokens)
        warm = fs.history.filter(pl.col("history").list.len() > 0)["user_idx"].to_numpy()
        self.warm = np.zeros(fs.vocabs.user.size, bool)
        self.warm[warm] = True

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        users = np.unique(np.asarray(users, np.int64))
        known = (users >= 0) & (users < len(self.warm))
        known[known] = self.warm[users[known]]
        cold = _users(users[~known])
        by_attr = (
            self.tokens.rows(cold["user_idx"].to_numpy())
            .join(self.per_token, on="attr_tok")
            .select("user_idx", "item_idx", "share")
        )
        base = cold.join(self.overall.with_columns(pl.col("share") * 0.5), how="cross")
        scored = (
            pl.concat([by_attr, base.select("user_idx", "item_idx", "share")])
            .group_by("user_idx", "item_idx")
            .agg(exact_sum(pl.col("share")).alias("score"))
        )
        return self.ctx.finish(scored, self.ctx.cfg.cold_user)
