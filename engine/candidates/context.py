"""What every candidate source reads: the feature set as of the request time, which items may
be recommended, what each user has seen, and (when a model is trained) the vectors and index."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from engine.candidates.config import CandidatesConfig
from engine.index import ItemIndex
from engine.index.eligibility import eligible_items
from engine.lookup import ByKey
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class CandidateContext:
    """Shared inputs of the candidate sources, built once per run."""

    fs: FeatureSet
    cfg: CandidatesConfig
    eligible: np.ndarray  # (n_items,) bool: products that are available
    seen: pl.DataFrame  # user_idx, item_idx: consumed in the feature window
    user_vectors: np.ndarray | None = None  # (n_users, D) by user_idx, from the two-tower model
    index: ItemIndex | None = None  # over the item vectors
    content_vectors: np.ndarray | None = None  # (n_items, D) content-only item vectors
    item_vectors: np.ndarray | None = None  # (n_items, D) two-tower item vectors
    cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)
    """Tables derived from `fs` once and reused by every request (see `once`)."""
    _building: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def build(cls, fs: FeatureSet, cfg: CandidatesConfig, **models: object) -> CandidateContext:
        eligible = eligible_items(fs.items, fs.vocabs.item.size, at=fs.as_of, kind="product")
        seen = fs.window_interactions().select("user_idx", "item_idx").unique()
        return cls(fs=fs, cfg=cfg, eligible=eligible, seen=seen, **models)  # type: ignore[arg-type]

    def once(self, name: str, build: Callable[[], object]) -> object:
        """`build()` the first time `name` is asked for, the stored value after: statistics
        over the whole feature set that an online request must not recompute. Built under a
        lock (re-entrant: one table may be built from another), so concurrent first calls
        build it once; a served version builds them all when it loads."""
        got = self.cache.get(name)
        if got is None:
            with self._building:
                got = self.cache.get(name)
                if got is None:
                    got = self.cache[name] = build()
        return got

    def warm(self) -> None:
        """Build the lookups the per-request methods read (a served version does at load)."""
        self.eligible_items, self._history, self._seen  # noqa: B018 - cached on first access

    @cached_property
    def eligible_items(self) -> pl.DataFrame:
        """item_idx of the eligible items, for joins (built once)."""
        return pl.DataFrame({"item_idx": np.flatnonzero(self.eligible).astype(np.int64)})

    @cached_property
    def _history(self) -> ByKey:
        return ByKey(self.fs.history)

    @cached_property
    def _seen(self) -> ByKey:
        return ByKey(self.seen)

    def history_of(self, users: np.ndarray) -> pl.DataFrame:
        """The `fs.history` rows of `users` (user_idx as Int64)."""
        return self._history.rows(users)

    def recent(self, users: np.ndarray) -> pl.DataFrame:
        """user_idx, item_idx, weight: each user's last `recent_items` history items, the
        latest weighing 1, the one before 1/2, and so on."""
        n = self.cfg.recent_items
        return (
            self.history_of(users)
            .select("user_idx", pl.col("history").list.tail(n).alias("item_idx"))
            .with_columns(pl.col("item_idx").list.len().alias("_n"))
            .explode("item_idx")
            .drop_nulls("item_idx")
            .with_columns(
                (1.0 / (pl.col("_n") - pl.int_range(pl.len()).over("user_idx"))).alias("weight")
            )
            .drop("_n")
        )

    def finish(self, df: pl.DataFrame, n: int, *, drop_seen: bool = True) -> pl.DataFrame:
        """Keep eligible items the user has not seen, the best `n` per user, ranked from 1."""
        df = df.with_columns(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
        items = df["item_idx"].to_numpy()
        ok = (items >= 0) & (items < len(self.eligible))
        ok[ok] = self.eligible[items[ok]]
        df = df.filter(pl.Series(ok))
        if drop_seen and df.height:
            seen = self._seen.rows(df["user_idx"].unique().to_numpy()).select(
                "user_idx", pl.col("item_idx").cast(pl.Int64)
            )
            df = df.join(seen, on=["user_idx", "item_idx"], how="anti")
        return (
            df.sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
            .group_by("user_idx", maintain_order=True)
            .head(n)
            .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank"))
            .select(
                pl.col("user_idx").cast(pl.Int64),
                pl.col("item_idx").cast(pl.Int64),
                pl.col("score").cast(pl.Float64),
                pl.col("rank").cast(pl.Int32),
            )
        )
