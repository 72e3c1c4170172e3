"""Top-K ranking metrics over full-corpus lists, per user, vectorised.

A method's output is a (U, K) matrix of item indices, best first (-1 where a list is shorter);
the truth is each user's held-out items with a graded relevance (> 0). Definitions follow the
usual IR ones (they agree with `ranx` to 1e-9, tested):

- Recall@k = hits in the top k / relevant items;  Precision@k = hits / k
- HitRate@k = 1 if any hit in the top k;  MRR@k = 1 / rank of the first hit in the top k
- MAP@k = sum over hits in the top k of Precision@rank, / relevant items
- NDCG@k with gain 2^rel - 1 and a log2(rank + 1) discount (LightGBM's and Burges'
  definition, the one the re-ranker is trained on), ideal from the user's own relevant items

Every metric is returned per user, so that two methods can be compared with a paired test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

RANKING = ("ndcg", "recall", "precision", "map", "mrr", "hit_rate")


@dataclass(frozen=True)
class Truth:
    """The held-out relevant items of the evaluated users, in CSR form by user row."""

    users: np.ndarray  # (U,) user_idx of each row
    offsets: np.ndarray  # (U + 1,) rows of user u are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray  # item_idx, sorted within each user
    grades: np.ndarray  # relevance (> 0) of each item

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> Truth:
        """From user_idx, item_idx, label rows (label > 0); users in ascending order."""
        f = (
            frame.filter(pl.col("label") > 0)
            .group_by("user_idx", "item_idx")
            .agg(pl.col("label").max())
            .sort("user_idx", "item_idx")
        )
        users, counts = np.unique(f["user_idx"].to_numpy().astype(np.int64), return_counts=True)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(
            users,
            offsets,
            f["item_idx"].to_numpy().astype(np.int64),
            f["label"].to_numpy().astype(np.float64),
        )

    @property
    def n_relevant(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, rows: np.ndarray) -> Truth:
        """The truth of the given user rows only (for per-segment figures)."""
        counts = self.n_relevant[rows]
        take = (
            np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
            if len(rows)
            else np.empty(0, np.int64)
        )
        return Truth(
            self.users[rows],
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.items[take],
            self.grades[take],
        )

    def only_items(self, keep: np.ndarray) -> Truth:
        """The truth restricted to items where `keep` (bool by item_idx) holds; users left
        with no relevant item are dropped."""
        ok = keep[self.items]
        row = np.repeat(np.arange(len(self.users)), self.n_relevant)
        counts = np.bincount(row[ok], minlength=len(self.users)).astype(np.int64)
        has = counts > 0
        return Truth(
            self.users[has],
            np.concatenate([[0], np.cumsum(counts[has])]).astype(np.int64),
            self.items[ok],
            self.grades[ok],
        )


def gains_of(top: np.ndarray, truth: Truth) -> np.ndarray:
    """(U, K) relevance of each listed item (0 where not relevant or padding)."""
    n_items = int(max(top.max(initial=0), truth.items.max(initial=0))) + 2
    row = np.repeat(np.arange(len(truth.users), dtype=np.int64), truth.n_relevant)
    keys = row * n_items + truth.items
    order = np.argsort(keys)
    keys, grades = keys[order], truth.grades[order]
    query = np.arange(len(top), dtype=np.int64)[:, None] * n_items + np.where(
        top >= 0, top, n_items - 1
    )
    pos = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
    if len(keys) == 0:
        return np.zeros(top.shape)
    found = (keys[pos] == query) & (top >= 0)
    return np.where(found, grades[pos], 0.0)


def ranking_metrics(
    top: np.ndarray, truth: Truth, ks: list[int] | tuple[int, ...]
) -> dict[str, np.ndarray]:
    """{"ndcg@10": (U,) per-user values, ...} for every metric in RANKING and k in `ks`.
    `top` rows are aligned with `truth.users` and hold at least max(ks) columns (padded
    with -1)."""
    kmax = max(ks)
    if top.shape[1] < kmax:
        top = np.pad(top, ((0, 0), (0, kmax - top.shape[1])), constant_values=-1)
    rel = gains_of(top[:, :kmax], truth)
    hit = rel > 0
    n_rel = truth.n_relevant.astype(np.float64)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1)
    cum_hits = np.cumsum(hit, axis=1)
    prec_at = cum_hits / ranks
    # the ideal list: each user's grades sorted descending
    ideal = np.zeros((len(truth.users), kmax))
    for u in range(len(truth.users)):
        g = np.sort(truth.grades[truth.offsets[u] : truth.offsets[u + 1]])[::-1][:kmax]
        ideal[u, : len(g)] = g
    dcg = np.cumsum((2.0**rel - 1.0) * discount, axis=1)
    idcg = np.cumsum((2.0**ideal - 1.0) * discount, axis=1)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            hits_k = cum_hits[:, k - 1].astype(np.float64)
            out[f"recall@{k}"] = np.where(n_rel > 0, hits_k / n_rel, 0.0)
            out[f"precision@{k}"] = hits_k / k
            out[f"hit_rate@{k}"] = (hits_k > 0).astype(np.float64)
            out[f"mrr@{k}"] = np.where((first > 0) & (first <= k), 1.0 / np.maximum(first, 1), 0.0)
            out[f"map@{k}"] = np.where(n_rel > 0, (prec_at[:, :k] * hit[:, :k]).sum(1) / n_rel, 0.0)
            out[f"ndcg@{k}"] = np.where(idcg[:, k - 1] > 0, dcg[:, k - 1] / idcg[:, k - 1], 0.0)
    return out


def means(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean of each per-user metric (NaN when there are no users)."""
    return {name: float(v.mean()) if len(v) else float("nan") for name, v in per_user.items()}
