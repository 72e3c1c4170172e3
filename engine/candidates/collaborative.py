"""Candidate sources from the item-to-item models (`itemitem.py`) over each user's whole
history: EASE where the catalogue fits a dense matrix (`[candidates] ease_max_items`),
item-kNN always. Their scores for every candidate, not only the ones they propose, are
re-ranker features (`pair_scores`), so the ranker starts from what the strongest simple model
knows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext
from engine.candidates.itemitem import ItemItem, top_of_scores, user_items


def _history(ctx: CandidateContext):  # noqa: ANN202 - a csr matrix
    return ctx.once("user_items", lambda: user_items(ctx.fs))


def ease_model(ctx: CandidateContext) -> ItemItem:
    """The context's EASE model, fitted once."""
    c = ctx.cfg
    return ctx.once("ease", lambda: ItemItem.ease(_history(ctx), lam=c.ease_lambda,  # type: ignore[return-value]
                                                  max_items=c.ease_max_items))


def knn_model(ctx: CandidateContext) -> ItemItem:
    """The context's item-kNN model, fitted once."""
    c = ctx.cfg
    return ctx.once("knn", lambda: ItemItem.knn(_history(ctx), neighbours=c.knn_neighbours,  # type: ignore[return-value]
                                                shrink=c.knn_shrink))


def ease_fits(ctx: CandidateContext) -> bool:
    """EASE runs where the products fit its dense matrix."""
    return int(ctx.eligible.sum()) <= ctx.cfg.ease_max_items


class _ItemItemSource:
    name: str
    size: Callable[[CandidateContext], int]
    model: Callable[[CandidateContext], ItemItem]

    def __init__(self, ctx: CandidateContext) -> None:
        self.ctx = ctx
        self.item_model = type(self).model(ctx)

    def __call__(self, users: np.ndarray) -> pl.DataFrame:
        users = np.asarray(users, np.int64)
        n = type(self).size(self.ctx)
        s = self.item_model.scores(users)
        s[:, ~self.ctx.eligible] = -np.inf
        seen = self.item_model.history[users].tocoo()
        s[seen.row, seen.col] = -np.inf
        s[~np.isfinite(s) | (s <= 0)] = -np.inf        # no evidence is no candidate
        s = np.round(s, 6)  # threaded BLAS may differ in the last bits: ranks must not
        top = top_of_scores(s, n)
        row = np.repeat(np.arange(len(users)), n)
        ok = top.ravel() >= 0
        item = top.ravel()[ok]
        df = pl.DataFrame({"user_idx": users[row[ok]], "item_idx": item,
                           "score": s[row[ok], item].astype(np.float64)})
        return self.ctx.finish(df, n)


class EaseSource(_ItemItemSource):
    """EASE's best items for the user's whole history."""

    name = "ease"
    size = staticmethod(lambda ctx: ctx.cfg.ease)
    model = staticmethod(ease_model)


class KnnSource(_ItemItemSource):
    """Item-kNN's best items for the user's whole history."""

    name = "knn"
    size = staticmethod(lambda ctx: ctx.cfg.knn)
    model = staticmethod(knn_model)
