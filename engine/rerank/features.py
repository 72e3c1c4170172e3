"""Re-ranker features of each (user, candidate item) row, computed with Polars from the
feature set as of the request time only (nothing from the label window can leak in).

Besides each source's score and rank: the two-tower dot product, two-tower and content
similarity to the user's last items, item popularity and recency over several windows, item
age, price and price relative to what the user usually buys, user x category, x leaf and x
brand shares, the share of the user's last items in the item's category (current intent), the
time since the user last touched the item's category, the user's own past events with the item,
the user's activity level, and where the item stands in its list by two-tower score and
popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.candidates.collaborative import ease_fits, ease_model, knn_model
from engine.candidates.context import CandidateContext
from engine.candidates.sequence import transition_scores
from engine.lookup import ByKey, dense_by_item, gather_items
from engine.rerank.similarity import vector_features
from pipelines.dataset import FeatureSet
from pipelines.features.popularity import DAY_US
from pipelines.sums import exact_sum

KEYS = ["user_idx", "item_idx"]


def _days(expr: pl.Expr, at) -> pl.Expr:
    return (pl.lit(at) - expr).dt.total_microseconds() / DAY_US


def _share(pos: pl.DataFrame, col: str, name: str) -> pl.DataFrame:
    """user_idx, `col`, `name`: the share of the user's events that fall in each value."""
    return (
        pos.group_by("user_idx", col)
        .agg(pl.len().alias("n"))
        .with_columns((pl.col("n") / pl.col("n").sum().over("user_idx")).alias(name))
        .drop("n")
    )


def _user_stats(ctx: CandidateContext) -> dict[str, pl.DataFrame]:
    """Per user activity and price; per (user, brand) and (user, leaf) share; per (user,
    category) recency; per (user, item) past events (people come back to things)."""
    fs = ctx.fs
    pos = fs.window_interactions().join(
        fs.items.select("item_idx", "brand_idx", "top_category", "leaf_category", "price"),
        on="item_idx",
    )
    users = pos.group_by("user_idx").agg(
        pl.len().alias("user_events"),
        pl.col("item_idx").n_unique().alias("user_items"),
        pl.col("price").mean().alias("user_mean_price"),
        _days(pl.col("ts").max(), fs.as_of).alias("user_days_since_last"),
    )
    cats = pos.group_by("user_idx", "top_category").agg(
        _days(pl.col("ts").max(), fs.as_of).alias("days_since_category")
    )
    pairs = pos.group_by("user_idx", "item_idx").agg(
        pl.len().alias("user_item_events"),
        _days(pl.col("ts").max(), fs.as_of).alias("days_since_user_item"),
    )
    return {
        "users": users,
        "brands": _share(pos, "brand_idx", "brand_share"),
        "leaves": _share(pos, "leaf_category", "leaf_share"),
        "categories": cats,
        "pairs": pairs,
    }


def _recent_intent(recent: pl.DataFrame, items: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Share of the user's last items (recency-weighted) in each top and leaf category: what
    the user is shopping for now, which a mean over the whole history blurs. `recent` is
    `ctx.recent` of the request's users, `items` the dense item table."""
    joined = recent.hstack(
        gather_items(items.select("top_category", "leaf_category"), recent["item_idx"].to_numpy())
    )
    out = {}
    for level in ("top", "leaf"):
        col = f"{level}_category"
        out[level] = (
            joined.group_by("user_idx", col)
            .agg(exact_sum(pl.col("weight")).alias("w"))
            .with_columns(
                (pl.col("w") / pl.col("w").sum().over("user_idx")).alias(f"recent_{level}_share")
            )
            .drop("w")
        )
    return out


def _leaf_stats(fs: FeatureSet) -> pl.DataFrame:
    """Per item: how many products share its leaf category, and its share of the leaf's
    traffic. Shoppers pick a category first and an item in it second, so an item's chance
    depends on how crowded its category is, which neither its own count nor the user vector
    says."""
    items = (
        fs.items.filter(pl.col("kind") == "product")
        .select("item_idx", "leaf_category")
        .join(
            fs.popularity.select("item_idx", "count_all"),
            on="item_idx",
            how="left",
        )
        .with_columns(pl.col("count_all").fill_null(0))
    )
    leaf = pl.col("count_all").sum().over("leaf_category")
    return items.select(
        "item_idx",
        pl.len().over("leaf_category").alias("leaf_items"),
        pl.when(leaf > 0).then(pl.col("count_all") / leaf).alias("leaf_traffic_share"),
    )


@dataclass(frozen=True)
class RerankTables:
    """Everything `feature_frame` looks up, built once per context (`rerank_tables`)."""

    items: pl.DataFrame  # item features dense by item_idx (`dense_by_item`)
    counts: list[str]  # the popularity count columns (null -> 0)
    affinity: ByKey  # by user: top_category, category_affinity, category_share
    users: ByKey  # by user: activity, mean price, days since the last event
    brands: ByKey  # by user: brand_idx, brand_share
    leaves: ByKey  # by user: leaf_category, leaf_share
    categories: ByKey  # by user: top_category, days_since_category
    pairs: ByKey  # by user: item_idx, the user's past events with the item


def _tables(ctx: CandidateContext) -> RerankTables:
    """Everything `feature_frame` looks up (see `RerankTables`)."""
    fs = ctx.fs
    pop = fs.popularity
    items = (
        fs.items.select(
            "item_idx",
            "top_category",
            "leaf_category",
            "brand_idx",
            "price",
            "price_bucket",
            _days(pl.col("created_ts"), fs.as_of).alias("item_age_days"),
        )
        .join(pop, on="item_idx", how="left")
        .join(_leaf_stats(fs), on="item_idx", how="left")
    )
    aff = fs.affinity.select(
        "user_idx",
        "top_category",
        pl.col("affinity").alias("category_affinity"),
        pl.col("share").alias("category_share"),
    )
    stats = _user_stats(ctx)
    return RerankTables(
        items=dense_by_item(items, fs.vocabs.item.size),
        counts=[c for c in pop.columns if c.startswith("count_") or c == "weight_all"],
        affinity=ByKey(aff),
        users=ByKey(stats["users"]),
        brands=ByKey(stats["brands"]),
        leaves=ByKey(stats["leaves"]),
        categories=ByKey(stats["categories"]),
        pairs=ByKey(stats["pairs"]),
    )


def rerank_tables(ctx: CandidateContext) -> RerankTables:
    """The context's feature lookup tables, built once."""
    return ctx.cache.rerank.get(lambda: _tables(ctx))


def feature_frame(cands: pl.DataFrame, ctx: CandidateContext) -> pl.DataFrame:
    """`cands` (merged candidates) with every re-ranker feature column added."""
    t = rerank_tables(ctx)
    users = cands["user_idx"].unique().to_numpy()
    recent = ctx.recent(users)
    df = cands.with_columns(
        **{k: pl.Series(v) for k, v in vector_features(cands, ctx, recent).items()}
    )
    df = item_item_features(df, ctx)
    intent = _recent_intent(recent, t.items)
    df = df.hstack(gather_items(t.items, df["item_idx"].to_numpy()))
    return (
        df.join(t.affinity.rows(users), on=["user_idx", "top_category"], how="left")
        .join(t.brands.rows(users), on=["user_idx", "brand_idx"], how="left")
        .join(t.leaves.rows(users), on=["user_idx", "leaf_category"], how="left")
        .join(t.categories.rows(users), on=["user_idx", "top_category"], how="left")
        .join(t.pairs.rows(users), on=KEYS, how="left")
        .join(t.users.rows(users), on="user_idx", how="left")
        .join(intent["top"], on=["user_idx", "top_category"], how="left")
        .join(intent["leaf"], on=["user_idx", "leaf_category"], how="left")
        .with_columns(
            *[
                pl.col(c).fill_null(0)
                for c in [
                    *t.counts,
                    "category_affinity",
                    "category_share",
                    "brand_share",
                    "leaf_share",
                    "user_item_events",
                    "user_events",
                    "user_items",
                    "recent_top_share",
                    "recent_leaf_share",
                ]
            ],
            (pl.col("price") / pl.col("user_mean_price")).alias("price_ratio"),
        )
        .drop("top_category", "leaf_category", "brand_idx", "user_mean_price")
        .pipe(list_features)
        .pipe(lambda f: hide_popularity(f, pl.col("days_since_last").is_null()))
    )


def item_item_features(df: pl.DataFrame, ctx: CandidateContext) -> pl.DataFrame:
    """`<source>_score` of the item-to-item sources (EASE, item-kNN, transitions) for every
    candidate, not only the ones each proposed (`<source>_rank` still says which): the score
    the strongest simple model gives this item for this user, whoever found it."""
    c = ctx.cfg
    users, items = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
    cols = {}
    if c.ease > 0 and ease_fits(ctx):
        cols["ease_score"] = ease_model(ctx).pair_scores(users, items)
    if c.knn > 0:
        cols["knn_score"] = knn_model(ctx).pair_scores(users, items)
    out = df.with_columns(**{k: pl.Series(k, v, pl.Float64) for k, v in cols.items()})
    if c.transitions > 0:
        nxt = transition_scores(ctx, np.unique(users)).rename({"score": "next_score"})
        out = (
            out.drop("next_score", strict=False)
            .join(nxt, on=KEYS, how="left")
            .with_columns(pl.col("next_score").fill_null(0.0))
        )
    return out


POPULARITY = ("count_", "weight_all", "days_since_last", "leaf_traffic_share")
"""Prefixes of the features that describe an item's past traffic (and its rank by it)."""


def hide_popularity(df: pl.DataFrame, where: pl.Expr) -> pl.DataFrame:
    """`df` with the popularity features missing (null, NaN to LightGBM) on rows `where`
    holds. An item nobody has touched yet has no popularity to speak of: "unknown" rather than
    "zero" lets the ranker fall back on the other features (see `[rerank]
    popularity_dropout`, which hides it on some known items in training so that it learns to)."""
    cols = [c for c in df.columns if c.startswith(POPULARITY)]
    return df.with_columns(pl.when(where).then(None).otherwise(pl.col(c)).alias(c) for c in cols)


def list_features(df: pl.DataFrame) -> pl.DataFrame:
    """Where each candidate stands in its own list: scores mean different things for a user
    with a sharp taste and one with a flat one, and LambdaRank compares rows within a list."""
    out = [
        pl.col(c).rank("min", descending=True).over("user_idx").alias(f"{c}_rank_in_list")
        for c in df.columns
        if c.startswith("count_")
    ]
    if "two_tower" in df.columns:
        out += [
            pl.col("two_tower")
            .rank("min", descending=True)
            .over("user_idx")
            .alias("two_tower_rank_in_list"),
            (pl.col("two_tower") - pl.col("two_tower").max().over("user_idx")).alias(
                "two_tower_gap"
            ),
        ]
    return df.with_columns(out)


def feature_names(frame: pl.DataFrame) -> list[str]:
    """Every numeric column except the keys, labels and bookkeeping."""
    skip = {*KEYS, "label", "sources", "cutoff"}
    return [c for c, t in frame.schema.items() if c not in skip and t.is_numeric()]


GRADES = {"purchase": 4, "add_to_cart": 3, "click": 2, "view": 1, "rating": 1}
"""Graded relevance of the strongest event a user had with an item in the label window."""


def labels(ctx: CandidateContext, split: str) -> pl.DataFrame:
    """user_idx, item_idx, label: the strongest event of each pair in `split`."""
    return (
        ctx.fs.interactions.filter(pl.col("split") == split)
        .with_columns(
            pl.col("event").replace_strict(GRADES, default=0, return_dtype=pl.Int32).alias("label")
        )
        .group_by("user_idx", "item_idx")
        .agg(pl.col("label").max())
    )
