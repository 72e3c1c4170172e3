"""The arrays one request reads, built once per version from the candidate context: per-user
rows (history, seen items, category/brand/leaf statistics) and per-item rows (co-visitation,
transition and content neighbours, trending lists) as CSR, item facts as dense columns.

Polars builds every table (the same frames the batch path joins against); a request only
slices and gathers, so its cost is the rows it reads and not a query plan's fixed price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from engine import kernels
from engine.candidates import CandidateSource, ModelContext
from engine.candidates.collaborative import ItemItemSource
from engine.candidates.covisit import CovisitSource
from engine.candidates.popular import ColdUserSource, TrendingSource
from engine.candidates.sequence import TransitionSource, transition_table
from engine.candidates.vectors import ContentSource
from engine.lookup import ByKey
from engine.rerank.features import rerank_tables
from pipelines.scalars import int_or

MISSING_KEY = -1
"""A null category, brand or leaf: matches no row (as a null key joins nothing)."""


@dataclass(frozen=True)
class Rows:
    """Variable-length rows by an integer key (CSR): row `k` holds `cols[c][indptr[k]:
    indptr[k + 1]]`; keys outside 0..n-1 have empty rows."""

    indptr: np.ndarray
    cols: dict[str, np.ndarray]

    @classmethod
    def build(
        cls,
        frame: pl.DataFrame,
        key: str,
        n_keys: int,
        columns: list[str],
        *,
        order: list[str] | None = None,
    ) -> Rows:
        """Rows of `frame` by `key` (rows of one key kept in their order, or sorted by
        `order` within the key)."""
        f = frame.sort([key, *(order or [])], maintain_order=True)
        keys = f[key].to_numpy()
        indptr = np.searchsorted(keys, np.arange(n_keys + 1), "left").astype(np.int64)
        return cls(indptr, {c: _array(f[c]) for c in columns})

    @property
    def n_keys(self) -> int:
        return len(self.indptr) - 1

    def gather(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions into the columns, owner): every row of each of `keys` in turn (repeats
        included), `owner[j]` the index into `keys` that row `j` belongs to."""
        return kernels.gather(self.indptr, np.asarray(keys, np.int64))


def _array(s: pl.Series) -> np.ndarray:
    """A column as numpy: floats with NaN for null, integer keys with `MISSING_KEY`."""
    if s.dtype.is_float():
        return s.cast(pl.Float64).fill_null(np.nan).to_numpy()
    if s.dtype.is_integer():
        return s.cast(pl.Int64).fill_null(MISSING_KEY).to_numpy()
    return s.to_numpy()


@dataclass(frozen=True)
class Lookup:
    """Per-user (key -> values) rows as one sorted array of (user, key) pairs: the values of
    any (user, key) pairs are one binary search."""

    pairs: np.ndarray  # sorted user * width + key
    width: int
    cols: dict[str, np.ndarray]

    @classmethod
    def build(cls, frame: pl.DataFrame, key: str, values: list[str]) -> Lookup:
        clean = frame.filter(pl.col(key).is_not_null())
        width = int_or(clean[key].max(), 0) + 2 if clean.height else 2
        clean = clean.with_columns(
            (pl.col("user_idx") * width + pl.col(key).cast(pl.Int64)).alias("_pair")
        ).sort("_pair")
        return cls(clean["_pair"].to_numpy(), width, {c: _array(clean[c]) for c in values})

    def values(self, users: np.ndarray, keys: np.ndarray, col: str) -> np.ndarray:
        """`col` of each (users[r], keys[r]), NaN where there is none (or the key is null)."""
        return self.columns(users, keys, [col])[col]

    def columns(
        self, users: np.ndarray, keys: np.ndarray, cols: list[str]
    ) -> dict[str, np.ndarray]:
        """`values` of several columns, the pairs searched once."""
        at = kernels.find_pairs(
            self.pairs, self.width, np.asarray(users, np.int64), np.asarray(keys, np.int64)
        )
        return {c: kernels.take_found(self.cols[c], at, np.nan) for c in cols}


@dataclass(frozen=True)
class RequestTables:
    """Everything the array path of a known user's request reads (see `engine.request`)."""

    ctx: ModelContext
    names: list[str]  # the version's candidate sources, in their order
    item_item: dict[str, ItemItemSource]  # the item-to-item sources among them, by name
    history: Rows  # by user: history items, oldest first
    seen: Rows  # by user: sorted items seen in the feature window
    covisit: Rows | None  # by item: neighbour, weight
    transitions: Rows | None  # by item: neighbour, weight
    content: Rows | None  # by item: neighbour, sim
    trending: Rows | None  # by category: item, count
    top_categories: Rows | None  # by user: top_category, share
    cold_warm: np.ndarray | None  # (n_users,) bool: has a history
    cold_tokens: Rows | None  # by user: attr_tok
    cold_per_token: Rows | None  # by token: item, share
    cold_overall: tuple[np.ndarray, np.ndarray] | None  # items, share / 2
    items: dict[str, np.ndarray]  # dense item columns by item_idx
    key_width: dict[str, int]  # above every value of the item key columns
    counts: list[str]  # popularity count columns (null -> 0)
    user_stats: dict[str, np.ndarray]  # dense by user_idx
    affinity: Lookup
    brands: Lookup
    leaves: Lookup
    categories: Lookup
    pairs: Lookup

    @classmethod
    def build(
        cls,
        ctx: ModelContext,
        sources: list[CandidateSource],
        *,
        content_neighbours: pl.DataFrame | None = None,
    ) -> RequestTables:
        """The tables of `ctx`; `content_neighbours` (item_idx, neighbour, sim), where the
        version stored them, are taken as they are instead of gathered from the source."""
        fs = ctx.fs
        n_users, n_items = fs.vocabs.user.size, fs.vocabs.item.size
        hist = fs.history.select("user_idx", pl.col("history")).explode("history").drop_nulls()
        seen = ctx.seen.select("user_idx", "item_idx")
        cov = _source(sources, CovisitSource)
        trend = _source(sources, TrendingSource)
        cold = _source(sources, ColdUserSource)
        content = _source(sources, ContentSource)
        t = rerank_tables(ctx)
        items = {c: _array(t.items[c]) for c in t.items.columns}
        users = t.users.frame
        stats = {}
        for c in users.columns:
            if c == "user_idx":
                continue
            col = np.full(n_users, 0.0 if c in ("user_events", "user_items") else np.nan)
            col[users["user_idx"].to_numpy()] = _array(users[c])
            stats[c] = col

        def lookup(table: ByKey, key: str, values: list[str]) -> Lookup:
            return Lookup.build(table.frame, key, values)

        return cls(
            ctx=ctx,
            names=[s.name for s in sources],
            item_item={s.name: s for s in sources if isinstance(s, ItemItemSource)},
            history=Rows.build(hist, "user_idx", n_users, ["history"]),
            seen=Rows.build(seen, "user_idx", n_users, ["item_idx"], order=["item_idx"]),
            covisit=None if cov is None else _neighbours(cov.table, n_items, "weight"),
            transitions=(
                _neighbours(transition_table(ctx), n_items, "weight")
                if _source(sources, TransitionSource) is not None
                else None
            ),
            content=None
            if content is None
            else Rows.build(
                content_neighbours
                if content_neighbours is not None
                else _content(content, hist, ctx.cfg.recent_items),
                "item_idx",
                n_items,
                ["neighbour", "sim"],
            ),
            trending=None
            if trend is None
            else Rows.build(
                trend.by_category,
                "top_category",
                int_or(fs.items["top_category"].max(), 0) + 1,
                ["item_idx", "count"],
            ),
            top_categories=None
            if trend is None
            else Rows.build(trend.top.frame, "user_idx", n_users, ["top_category", "share"]),
            cold_warm=None if cold is None else cold.warm,
            cold_tokens=None
            if cold is None
            else Rows.build(cold.tokens.frame, "user_idx", n_users, ["attr_tok"]),
            cold_per_token=None
            if cold is None
            else Rows.build(
                cold.per_token, "attr_tok", fs.vocabs.user_attr.size + 1, ["item_idx", "share"]
            ),
            cold_overall=None
            if cold is None
            else (cold.overall["item_idx"].to_numpy(), cold.overall["share"].to_numpy() * 0.5),
            items=items,
            counts=list(t.counts),
            key_width={
                c: int(items[c].max(initial=0)) + 2
                for c in ("top_category", "leaf_category", "brand_idx")
            },
            user_stats=stats,
            affinity=lookup(t.affinity, "top_category", ["category_affinity", "category_share"]),
            brands=lookup(t.brands, "brand_idx", ["brand_share"]),
            leaves=lookup(t.leaves, "leaf_category", ["leaf_share"]),
            categories=lookup(t.categories, "top_category", ["days_since_category"]),
            pairs=lookup(t.pairs, "item_idx", ["user_item_events", "days_since_user_item"]),
        )


S = TypeVar("S")


def _source(sources: list[CandidateSource], kind: type[S]) -> S | None:
    """The source of class `kind` among `sources` (None if there is none)."""
    return next((s for s in reversed(sources) if isinstance(s, kind)), None)


def _neighbours(table: ByKey, n_items: int, value: str) -> Rows:
    """An item's neighbours in neighbour order: the same rows whatever order a group-by
    gave them in (a version's stored tables are the ones a build gives)."""
    return Rows.build(table.frame, "item_idx", n_items, ["neighbour", value], order=["neighbour"])


def _content(source: ContentSource, hist: pl.DataFrame, recent: int) -> pl.DataFrame:
    """The content neighbours of every item that is among some user's last `recent` history
    items: all a known user's request can start from (the nightly stores them with the
    tables; a version from before that kept them in `request/content_neighbours.arrow`)."""
    seeds = (
        hist.group_by("user_idx", maintain_order=True).tail(recent)["history"].unique().to_numpy()
    )
    return source.neighbours(seeds)
