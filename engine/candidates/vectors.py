"""Candidates from vectors: two-tower nearest neighbours of the user, and content neighbours
(content-only item vectors) of the user's last items."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext
from engine.index import IndexConfig, ItemIndex, build_index, exact_top_k

EXACT_MAX = 100_000
"""Up to this many items the content neighbours are an exact numpy scan."""
SCORE_BUDGET = 1 << 26
"""Most query x item scores the content source holds at once (256 MB of float32; with 1M
items, 67 queries a block)."""


class AnnSource:
    """The user's two-tower vector searched in the item index, seen and ineligible items
    excluded inside the search so none of the `ann` slots is wasted."""

    name = "ann"

    def __init__(self, ctx: CandidateContext) -> None:
        if ctx.user_vectors is None or ctx.index is None:
            raise ValueError("the ann source needs user vectors and an item index")
        self.ctx = ctx
        self.user_vectors: np.ndarray = ctx.user_vectors
        self.index: ItemIndex = ctx.index
        seen = ctx.seen.group_by("user_idx").agg("item_idx")
        self.seen = dict(
            zip(
                seen["user_idx"].to_list(),
                (np.asarray(v, np.int64) for v in seen["item_idx"].to_list()),
                strict=True,
            )
        )

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        ctx = self.ctx
        empty = np.empty(0, np.int64)
        scores, items = self.index.search(
            self.user_vectors[users],
            ctx.cfg.ann,
            exclude=[self.seen.get(int(u), empty) for u in users],
            allowed=ctx.eligible,
        )
        df = pl.DataFrame(
            {
                "user_idx": np.repeat(users, items.shape[1]),
                "item_idx": items.ravel(),
                "score": scores.ravel().astype(np.float64),
            }
        )
        return ctx.finish(df.filter(pl.col("item_idx") >= 0), ctx.cfg.ann)


class ContentSource:
    """Items whose content-only vectors are nearest to those of the user's recent items: what
    looks like what the user just looked at, new items included."""

    name = "content"

    def __init__(self, ctx: CandidateContext) -> None:
        if ctx.content_vectors is None:
            raise ValueError("the content source needs content-only item vectors")
        self.ctx = ctx
        self.vectors: np.ndarray = ctx.content_vectors
        self.items = np.flatnonzero(ctx.eligible)
        self._neighbours: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._index: ItemIndex | None = None
        self._cand: np.ndarray | None = None

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows into `self.items`, inner products) of each query's k nearest content vectors:
        exact with numpy up to `EXACT_MAX` items, else an index from the factory (IVF at a
        million items; a numpy scan there spends minutes in argpartition)."""
        if self._cand is None:  # gathered once: a copy of every eligible item's vector
            self._cand = self.vectors[self.items]
        cand = self._cand
        if len(self.items) > EXACT_MAX:
            if self._index is None:
                self._index, _ = build_index(cand, np.arange(len(self.items)), IndexConfig())
            sims, rows = self._index.search(queries, k)
            return rows, sims
        rows_out, sims_out = [], []
        step = max(1, SCORE_BUDGET // max(len(self.items), 1))  # bounded (Q, N) score block
        for a in range(0, len(queries), step):
            q = queries[a : a + step]
            rows = exact_top_k(q, cand, k)
            rows_out.append(rows)
            sims_out.append(np.einsum("qd,qkd->qk", q, cand[rows]))
        return np.concatenate(rows_out), np.concatenate(sims_out)

    def _table(self, seeds: np.ndarray) -> pl.DataFrame:
        """item_idx, neighbour, weight for the seed items (computed once per item)."""
        vecs = self.vectors
        todo = np.array([s for s in seeds if s not in self._neighbours], np.int64)
        k = min(self.ctx.cfg.neighbours + 1, len(self.items))
        if len(todo):
            rows, sims = self._search(vecs[todo], k)
            for s, r, w in zip(todo, rows, sims, strict=True):
                keep = r >= 0
                self._neighbours[int(s)] = (self.items[r[keep]], w[keep])
        parts = [(s, *self._neighbours[int(s)]) for s in seeds]
        return (
            pl.DataFrame(
                {
                    "item_idx": np.concatenate([np.full(len(n), s) for s, n, _ in parts]),
                    "neighbour": np.concatenate([n for _, n, _ in parts]),
                    "sim": np.concatenate([w for _, _, w in parts]).astype(np.float64),
                }
            )
            if parts
            else pl.DataFrame(
                schema={"item_idx": pl.Int64, "neighbour": pl.Int64, "sim": pl.Float64}
            )
        )

    def neighbours(self, seeds: np.ndarray) -> pl.DataFrame:
        """item_idx, neighbour, sim of each of `seeds` (searched once per item, then kept)."""
        return self._table(np.asarray(seeds, np.int64))

    def searched(self) -> np.ndarray:
        """The seed items whose neighbours are known (sorted)."""
        return np.array(sorted(self._neighbours), np.int64)

    def preload(self, table: pl.DataFrame) -> None:
        """Take the neighbours a version stored (`neighbours` of its seeds) instead of
        searching for them again."""
        t = table.sort("item_idx", maintain_order=True)
        items, nb = t["item_idx"].to_numpy(), t["neighbour"].to_numpy()
        sim = t["sim"].to_numpy()
        starts: np.ndarray | list[int] = (
            np.flatnonzero(np.r_[True, items[1:] != items[:-1]]) if len(items) else []
        )
        for a, b in zip(starts, [*starts[1:], len(items)], strict=True):
            self._neighbours[int(items[a])] = (nb[a:b], sim[a:b])

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        recent = self.ctx.recent(users)
        table = self._table(recent["item_idx"].unique().to_numpy())
        scored = (
            recent.join(table, on="item_idx")
            .filter(pl.col("neighbour") != pl.col("item_idx"))
            .group_by("user_idx", pl.col("neighbour").alias("item_idx"))
            .agg((pl.col("weight") * pl.col("sim")).max().alias("score"))
        )
        return self.ctx.finish(scored, self.ctx.cfg.content)
