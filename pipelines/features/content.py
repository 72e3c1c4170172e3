"""Item content: category path prefixes, title and tag tokens, price buckets.

These carry the content signal that lets a brand-new item get a useful vector before anyone
has interacted with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import polars as pl

CATEGORY_SEP = ">"


class _Encoder(Protocol):
    def encode(self, expr: pl.Expr) -> pl.Expr: ...
    def encode_list(self, expr: pl.Expr) -> pl.Expr: ...


def category_prefixes(expr: pl.Expr, levels: int = 3) -> pl.Expr:
    """``"a>b>c"`` -> ``["a", "a>b", "a>b>c"]`` (at most `levels` prefixes; null -> [])."""
    parts = expr.str.split(CATEGORY_SEP).list.eval(pl.element().str.strip_chars())
    prefixes = [parts.list.head(k).list.join(CATEGORY_SEP) for k in range(1, levels + 1)]
    return (
        pl.concat_list(prefixes)
        .list.unique(maintain_order=True)
        .list.eval(pl.element().filter(pl.element() != ""))
        .fill_null(pl.lit([], pl.List(pl.String)))
    )


def text_tokens(title: pl.Expr, tags: pl.Expr | None = None) -> pl.Expr:
    """Lower-cased word tokens of the title, plus the tags as ``tag:<t>`` tokens."""
    words = (
        title.str.to_lowercase().str.extract_all(r"\w+").fill_null(pl.lit([], pl.List(pl.String)))
    )
    if tags is None:
        return words
    tag_tokens = tags.list.eval(pl.lit("tag:") + pl.element().str.to_lowercase())
    return pl.concat_list([words, tag_tokens.fill_null(pl.lit([], pl.List(pl.String)))])


def price_edges(prices: pl.Series, n_buckets: int) -> list[float]:
    """Quantile edges that split the observed prices into `n_buckets` buckets."""
    p = prices.drop_nulls().to_numpy()
    if len(p) == 0:
        return []
    qs = np.quantile(p, np.linspace(0, 1, n_buckets + 1)[1:-1])
    return sorted({float(q) for q in qs})


def price_bucket(price: pl.Expr, edges: Sequence[float]) -> pl.Expr:
    """Bucket 1..len(edges)+1 by the edges; 0 for a missing price."""
    bucket = (
        pl.sum_horizontal([(price >= e).cast(pl.Int32) for e in edges]) + 1
        if edges
        else pl.lit(1, pl.Int32)
    )
    return pl.when(price.is_null()).then(pl.lit(0, pl.Int32)).otherwise(bucket).cast(pl.Int32)


def item_content(
    items: pl.LazyFrame,
    *,
    item: _Encoder,
    category: _Encoder,
    brand: _Encoder,
    token: _Encoder,
    edges: Sequence[float],
    levels: int = 3,
) -> pl.LazyFrame:
    """One row per item: item_idx, kind, category / brand / token indices, price bucket,
    availability, creation time, and for ads their campaign, bid, budget and flight dates."""
    return items.select(
        item.encode(pl.col("item_id")).alias("item_idx"),
        "item_id",
        "kind",
        category.encode_list(category_prefixes(pl.col("category"), levels)).alias("category_tok"),
        category.encode(pl.col("category")).alias("leaf_category"),
        category.encode(
            pl.col("category").str.split(CATEGORY_SEP).list.first().str.strip_chars()
        ).alias("top_category"),
        brand.encode(pl.col("brand")).alias("brand_idx"),
        token.encode_list(text_tokens(pl.col("title"), pl.col("tags"))).alias("title_tok"),
        price_bucket(pl.col("price"), edges).alias("price_bucket"),
        "price",
        "available",
        "created_ts",
        "campaign_id",
        "bid",
        "daily_budget",
        "start_ts",
        "end_ts",
    ).sort("item_idx")
