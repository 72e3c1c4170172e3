"""What every candidate source reads: the feature set as of the request time, which items may
be recommended, what each user has seen, and (when a model is trained) the vectors and index."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.candidates.config import CandidatesConfig
from engine.candidates.itemitem import ItemItem
from engine.index import ItemIndex
from engine.index.eligibility import eligible_items
from engine.lookup import ByKey
from pipelines.dataset import FeatureSet
from pipelines.encode import INDEX_DTYPE

if TYPE_CHECKING:
    from engine.rerank.features import RerankTables

T = TypeVar("T")


class Once(Generic[T]):
    """One table derived from the feature set: built by the first `get` and the same object
    after. Built under a lock, so concurrent first calls build it once; a served version
    builds every table it reads when it loads (`CandidateContext.warm`)."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self, build: Callable[[], T]) -> T:
        """The table, `build()` the first time."""
        got = self._value
        if got is None:
            with self._lock:
                got = self._value
                if got is None:
                    got = self._value = build()
        return got

    @property
    def built(self) -> T | None:
        """The table if it was built, else None (never builds it)."""
        return self._value


@dataclass(frozen=True, eq=False)
class DerivedTables:
    """Statistics over the whole feature set that an online request must not recompute,
    each built once per context (see `Once`)."""

    user_items: Once[sp.csr_matrix] = field(default_factory=Once)
    """The binary user x item matrix of the feature window's positives."""
    ease: Once[ItemItem] = field(default_factory=Once)
    knn: Once[ItemItem] = field(default_factory=Once)
    transitions: Once[ByKey] = field(default_factory=Once)
    """The item-to-next-item transitions, by item."""
    rerank: Once[RerankTables] = field(default_factory=Once)
    """The re-ranker's feature lookup tables."""

    def item_item(self, name: str) -> Once[ItemItem]:
        """The item-to-item model called `name` ("ease" or "knn")."""
        return {"ease": self.ease, "knn": self.knn}[name]


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
    cache: DerivedTables = field(default_factory=DerivedTables, repr=False, compare=False)
    """Tables derived from `fs` once and reused by every request."""

    @classmethod
    def build(
        cls,
        fs: FeatureSet,
        cfg: CandidatesConfig,
        *,
        user_vectors: np.ndarray | None = None,
        index: ItemIndex | None = None,
        content_vectors: np.ndarray | None = None,
        item_vectors: np.ndarray | None = None,
    ) -> CandidateContext:
        eligible, seen = _eligible_and_seen(fs)
        return CandidateContext(
            fs=fs,
            cfg=cfg,
            eligible=eligible,
            seen=seen,
            user_vectors=user_vectors,
            index=index,
            content_vectors=content_vectors,
            item_vectors=item_vectors,
        )

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
        # the sources' frames come from numpy, scipy and polars of several widths
        df = df.with_columns(pl.col("user_idx", "item_idx").cast(INDEX_DTYPE))
        items = df["item_idx"].to_numpy()
        ok = (items >= 0) & (items < len(self.eligible))
        ok[ok] = self.eligible[items[ok]]
        df = df.filter(pl.Series(ok))
        if drop_seen and df.height:
            seen = self._seen.rows(df["user_idx"].unique().to_numpy()).select(
                "user_idx", "item_idx"
            )
            df = df.join(seen, on=["user_idx", "item_idx"], how="anti")
        return (
            df.sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
            .group_by("user_idx", maintain_order=True)
            .head(n)
            .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank"))
            .select(
                "user_idx",
                "item_idx",
                pl.col("score").cast(pl.Float64),
                pl.col("rank").cast(pl.Int32),
            )
        )


def _eligible_and_seen(fs: FeatureSet) -> tuple[np.ndarray, pl.DataFrame]:
    """The products available as of `fs` (a mask by item_idx) and each user's seen items."""
    eligible = eligible_items(fs.items, fs.vocabs.item.size, at=fs.as_of, kind="product")
    seen = fs.window_interactions().select("user_idx", "item_idx").unique()
    return eligible, seen


@dataclass(frozen=True)
class ModelContext(CandidateContext):
    """The candidate context of a trained two-tower model: its vectors and item index are
    always present (what a published version and the evaluation's refit give)."""

    # field(): no default (a bare annotation would inherit the base class's None)
    user_vectors: np.ndarray = field()
    index: ItemIndex = field()
    content_vectors: np.ndarray = field()
    item_vectors: np.ndarray = field()

    @classmethod
    def of(
        cls,
        fs: FeatureSet,
        cfg: CandidatesConfig,
        *,
        user_vectors: np.ndarray,
        index: ItemIndex,
        content_vectors: np.ndarray,
        item_vectors: np.ndarray,
    ) -> ModelContext:
        eligible, seen = _eligible_and_seen(fs)
        return cls(
            fs=fs,
            cfg=cfg,
            eligible=eligible,
            seen=seen,
            user_vectors=user_vectors,
            index=index,
            content_vectors=content_vectors,
            item_vectors=item_vectors,
        )
