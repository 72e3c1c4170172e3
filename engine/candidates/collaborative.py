"""Candidate sources from the item-to-item models (`itemitem.py`) over each user's whole
history: EASE where the catalogue fits a dense matrix (`[candidates] ease_max_items`),
item-kNN always. Their scores for every candidate, not only the ones they propose, are
re-ranker features (`pair_scores`), so the ranker starts from what the strongest simple model
knows."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from engine.candidates.context import CandidateContext
from engine.candidates.itemitem import ItemItem, ScoreRows, user_items
from engine.kernels import best


def user_items_of(ctx: CandidateContext) -> sp.csr_matrix:
    """The context's binary user x item matrix (the feature window's positives), built once."""
    return ctx.cache.user_items.get(lambda: user_items(ctx.fs))


def ease_model(ctx: CandidateContext) -> ItemItem:
    """The context's EASE model, fitted once."""
    c = ctx.cfg
    return ctx.cache.ease.get(
        lambda: ItemItem.ease(user_items_of(ctx), lam=c.ease_lambda, max_items=c.ease_max_items)
    )


def knn_model(ctx: CandidateContext) -> ItemItem:
    """The context's item-kNN model, fitted once."""
    c = ctx.cfg
    return ctx.cache.knn.get(
        lambda: ItemItem.knn(user_items_of(ctx), neighbours=c.knn_neighbours, shrink=c.knn_shrink)
    )


def ease_fits(ctx: CandidateContext) -> bool:
    """EASE runs where the products fit its dense matrix."""
    return int(ctx.eligible.sum()) <= ctx.cfg.ease_max_items


class ItemItemSource:
    name: str
    size: Callable[[CandidateContext], int]
    model: Callable[[CandidateContext], ItemItem]

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        self.item_model = type(self).model(ctx)

    @property
    def per_user(self) -> int:
        """Items this source proposes per user."""
        return min(type(self).size(self.ctx), self.item_model.n_items)

    def top(
        self, users: np.ndarray, extra: Mapping[int, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, ScoreRows]:
        """(row into `users`, item, score) of each user's best `per_user` items with evidence
        (eligible, unseen, score above 0), and the users' scores (`ScoreRows`). `extra[r]`:
        items added to row `r`'s history (a user's events since the version)."""
        users = np.asarray(users, np.int64)
        if self.item_model.is_sparse:
            return self._top_sparse(users, extra)
        dense = self.item_model.scores(users, extra)
        s = torch.from_numpy(dense)
        bad = ~(s > 0)  # NaN, 0, negative: no evidence
        bad[:, torch.from_numpy(~self.ctx.eligible)] = True
        h = self.item_model.history
        if extra:
            seen = self.item_model.rows(users, extra).tocoo()
            bad[
                torch.from_numpy(seen.row.astype(np.int64)),
                torch.from_numpy(seen.col.astype(np.int64)),
            ] = True
        elif len(users) == 1:  # one request: its row of the CSR, without a sparse slice
            cols = h.indices[h.indptr[users[0]] : h.indptr[users[0] + 1]].astype(np.int64)
            bad[0, torch.from_numpy(cols)] = True
        else:
            seen = h[users].tocoo()
            bad[
                torch.from_numpy(seen.row.astype(np.int64)),
                torch.from_numpy(seen.col.astype(np.int64)),
            ] = True
        # rounded: threaded BLAS may differ in the last bits, and ties must rank the same
        best_vals, best_items = torch.topk(
            torch.round(s.masked_fill(bad, -torch.inf), decimals=6), self.per_user, dim=1
        )
        vals, top = best_vals.numpy(), best_items.numpy()
        ok = np.isfinite(vals)
        row = np.broadcast_to(np.arange(len(users))[:, None], vals.shape)
        return (
            row[ok],
            top[ok].astype(np.int64),
            vals[ok].astype(np.float64),
            ScoreRows(dense=dense),
        )

    def _top_sparse(
        self, users: np.ndarray, extra: Mapping[int, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, ScoreRows]:
        """`top` from a sparse model's CSR scores: only the items with evidence are ever
        held, never a (users x catalogue) block; ties go to the lower item."""
        s = self.item_model.sparse_scores(users, extra)
        row = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(s.indptr))
        n = np.int64(len(self.ctx.eligible))
        hist = self.item_model.history
        if extra:
            h = self.item_model.rows(users, extra)
            seen = np.repeat(
                np.arange(len(users), dtype=np.int64), np.diff(h.indptr)
            ) * n + h.indices.astype(np.int64)
        elif len(users) == 1:  # one request: its row of the CSR, without a sparse slice
            seen = np.sort(
                hist.indices[hist.indptr[users[0]] : hist.indptr[users[0] + 1]].astype(np.int64)
            )
        else:
            h = hist[users]
            h.sort_indices()
            seen = np.repeat(
                np.arange(len(users), dtype=np.int64), np.diff(h.indptr)
            ) * n + h.indices.astype(np.int64)
        evidence = s.data > 0
        vals = torch.round(torch.from_numpy(s.data[evidence]), decimals=6).numpy()
        # eligible, unseen, the best `per_user` of each user by score (ties: the lower item)
        row, items, vals = best(
            row[evidence],
            s.indices[evidence].astype(np.int64),
            vals.astype(np.float64),
            self.ctx.eligible,
            seen,
            self.per_user,
            True,
        )
        return row, items, vals, ScoreRows(sparse=s)

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        users = np.asarray(users, np.int64)
        # the model keeps these scores for the features of the same users: read, never write
        row, items, scores, _ = self.top(users)
        df = pl.DataFrame({"user_idx": users[row], "item_idx": items, "score": scores})
        return self.ctx.finish(df, self.per_user)


class EaseSource(ItemItemSource):
    """EASE's best items for the user's whole history."""

    name = "ease"
    size = staticmethod(lambda ctx: ctx.cfg.ease)
    model = staticmethod(ease_model)


class KnnSource(ItemItemSource):
    """Item-kNN's best items for the user's whole history."""

    name = "knn"
    size = staticmethod(lambda ctx: ctx.cfg.knn)
    model = staticmethod(knn_model)
