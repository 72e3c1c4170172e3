"""Re-ranker features of each (user, candidate item) row, computed with Polars from the
feature set as of the request time only (nothing from the label window can leak in).

Besides each source's score and rank: the two-tower dot product, content similarity to the
user's recent items, item popularity and recency over several windows, item age, price and
price relative to what the user usually buys, user x category and user x brand affinity, the
share of the user's last items in the item's category (current intent), the time since the
user last touched the item's category, and the user's activity level.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext
from pipelines.features.popularity import DAY_US

KEYS = ["user_idx", "item_idx"]


def _dot(users: np.ndarray, items: np.ndarray, uv: np.ndarray, iv: np.ndarray) -> np.ndarray:
    out = np.empty(len(users), np.float32)
    for a in range(0, len(users), 1 << 18):
        s = slice(a, a + (1 << 18))
        out[s] = np.einsum("nd,nd->n", uv[users[s]], iv[items[s]])
    return out


def _days(expr: pl.Expr, at) -> pl.Expr:  # noqa: ANN001 - a datetime
    return (pl.lit(at) - expr).dt.total_microseconds() / DAY_US


def _user_stats(ctx: CandidateContext) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per user activity and price; per (user, brand) share; per (user, category) recency."""
    fs = ctx.fs
    pos = (fs.window_interactions()
           .join(fs.items.select("item_idx", "brand_idx", "top_category", "price"), on="item_idx")
           .with_columns(pl.col("user_idx").cast(pl.Int64)))
    users = pos.group_by("user_idx").agg(
        pl.len().alias("user_events"), pl.col("item_idx").n_unique().alias("user_items"),
        pl.col("price").mean().alias("user_mean_price"),
        _days(pl.col("ts").max(), fs.as_of).alias("user_days_since_last"))
    brands = (pos.group_by("user_idx", "brand_idx").agg(pl.len().alias("n"))
              .with_columns((pl.col("n") / pl.col("n").sum().over("user_idx")).alias("brand_share"))
              .drop("n"))
    cats = pos.group_by("user_idx", "top_category").agg(
        _days(pl.col("ts").max(), fs.as_of).alias("days_since_category"))
    return users, brands, cats


def _recent_intent(ctx: CandidateContext, users: np.ndarray) -> dict[str, pl.DataFrame]:
    """Share of the user's last items (recency-weighted) in each top and leaf category: what
    the user is shopping for now, which a mean over the whole history blurs."""
    recent = ctx.recent(users).with_columns(pl.col("user_idx").cast(pl.Int64),
                                            pl.col("item_idx").cast(pl.Int64))
    cats = ctx.fs.items.select(pl.col("item_idx").cast(pl.Int64), "top_category", "leaf_category")
    joined = recent.join(cats, on="item_idx")
    out = {}
    for level in ("top", "leaf"):
        col = f"{level}_category"
        out[level] = (joined.group_by("user_idx", col).agg(pl.col("weight").sum().alias("w"))
                      .with_columns((pl.col("w") / pl.col("w").sum().over("user_idx"))
                                    .alias(f"recent_{level}_share"))
                      .drop("w"))
    return out


def feature_frame(cands: pl.DataFrame, ctx: CandidateContext) -> pl.DataFrame:
    """`cands` (merged candidates) with every re-ranker feature column added."""
    fs = ctx.fs
    df = cands.with_columns(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
    u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
    extra = {}
    if ctx.user_vectors is not None and ctx.item_vectors is not None:
        extra["two_tower"] = _dot(u, i, ctx.user_vectors, ctx.item_vectors)
    if ctx.content_vectors is not None:
        recent = ctx.recent(np.unique(u))
        cv = ctx.content_vectors
        profile = np.zeros((fs.vocabs.user.size, cv.shape[1]), np.float32)
        if recent.height:
            ru, ri = recent["user_idx"].to_numpy(), recent["item_idx"].to_numpy()
            np.add.at(profile, ru, cv[ri] * recent["weight"].to_numpy()[:, None])
            profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
        extra["content_sim"] = _dot(u, i, profile, cv)
    df = df.with_columns(**{k: pl.Series(v) for k, v in extra.items()})

    pop = fs.popularity.with_columns(pl.col("item_idx").cast(pl.Int64))
    items = fs.items.select(
        pl.col("item_idx").cast(pl.Int64), "top_category", "leaf_category", "brand_idx", "price",
        "price_bucket",
        _days(pl.col("created_ts"), fs.as_of).alias("item_age_days"))
    aff = fs.affinity.select(pl.col("user_idx").cast(pl.Int64), "top_category",
                             pl.col("affinity").alias("category_affinity"),
                             pl.col("share").alias("category_share"))
    users, brands, cats = _user_stats(ctx)
    intent = _recent_intent(ctx, np.unique(u))
    counts = [c for c in pop.columns if c.startswith("count_") or c == "weight_all"]
    return (df.join(items, on="item_idx", how="left")
            .join(pop, on="item_idx", how="left")
            .join(aff, on=["user_idx", "top_category"], how="left")
            .join(brands, on=["user_idx", "brand_idx"], how="left")
            .join(cats, on=["user_idx", "top_category"], how="left")
            .join(users, on="user_idx", how="left")
            .join(intent["top"], on=["user_idx", "top_category"], how="left")
            .join(intent["leaf"], on=["user_idx", "leaf_category"], how="left")
            .with_columns(*[pl.col(c).fill_null(0) for c in
                            [*counts, "category_affinity", "category_share", "brand_share",
                             "user_events", "user_items", "recent_top_share",
                             "recent_leaf_share"]],
                          (pl.col("price") / pl.col("user_mean_price")).alias("price_ratio"))
            .drop("top_category", "leaf_category", "brand_idx", "user_mean_price"))


def feature_names(frame: pl.DataFrame) -> list[str]:
    """Every numeric column except the keys, labels and bookkeeping."""
    skip = {*KEYS, "label", "sources"}
    return [c for c, t in frame.schema.items() if c not in skip and t.is_numeric()]


GRADES = {"purchase": 4, "add_to_cart": 3, "click": 2, "view": 1, "rating": 1}
"""Graded relevance of the strongest event a user had with an item in the label window."""


def labels(ctx: CandidateContext, split: str) -> pl.DataFrame:
    """user_idx, item_idx, label: the strongest event of each pair in `split`."""
    return (ctx.fs.interactions.filter(pl.col("split") == split)
            .with_columns(pl.col("event").replace_strict(GRADES, default=0,
                                                         return_dtype=pl.Int32).alias("label"))
            .group_by(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
            .agg(pl.col("label").max()))
