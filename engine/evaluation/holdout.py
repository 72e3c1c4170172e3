"""The held-out view of one evaluation: which users are scored, their truth (new positives
on eligible products after the cut), what each may not be shown again, and the fit window's
interactions the baselines learn from; plus the user segments the report breaks figures by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.candidates import CandidateContext
from engine.evaluation.baselines import Interactions
from engine.evaluation.metrics import Truth
from engine.rerank.features import labels
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class Holdout:
    """The evaluated users, their truth and what may be listed for them."""

    fs: FeatureSet
    truth: Truth
    seen: sp.csr_matrix  # (n_users, n_items) items each user may not be shown again
    eligible: np.ndarray  # (n_items,) bool: products on offer at the cut
    counts: np.ndarray  # (n_items,) users with a positive in the fit window
    fit: Interactions
    window: pl.DataFrame  # the fit window's positives (user_idx, item_idx, ts)

    def recent(self, days: float | None) -> sp.csr_matrix:
        """The fit matrix of the last `days` before the cut (None: the whole window)."""
        if days is None:
            return self.fit.matrix
        w = self.window.filter(pl.col("ts") >= self.fs.as_of - timedelta(days=days))
        return Interactions.build(
            w["user_idx"].to_numpy(), w["item_idx"].to_numpy(), *self.fit.matrix.shape
        ).matrix


def holdout(ctx: CandidateContext, split: str = "test") -> Holdout:
    """Users with a new positive in `split` after the context's feature window, whose truth is
    those positives (eligible products they had not seen)."""
    fs = ctx.fs
    n_users, n_items = fs.vocabs.user.size, fs.vocabs.item.size
    seen = ctx.seen.select("user_idx", "item_idx")
    seen_m = Interactions.build(
        seen["user_idx"].to_numpy(), seen["item_idx"].to_numpy(), n_users, n_items
    ).matrix
    test = (
        labels(ctx, split)
        .join(seen, on=["user_idx", "item_idx"], how="anti")
        .join(ctx.eligible_items, on="item_idx", how="semi")
    )
    win = fs.window_interactions().select("user_idx", "item_idx", "ts")
    fit = Interactions.build(
        win["user_idx"].to_numpy(), win["item_idx"].to_numpy(), n_users, n_items
    )
    counts = np.asarray(fit.matrix.sum(axis=0)).ravel()
    return Holdout(fs, Truth.from_frame(test), seen_m, ctx.eligible, counts, fit, win)


def segments(h: Holdout, cfg_bins: list[int]) -> dict[str, np.ndarray]:
    """Row indices (into the truth's users) of each user segment."""
    activity = np.asarray(h.fit.matrix[h.truth.users].sum(axis=1)).ravel()
    out = {
        "new users": np.flatnonzero(activity == 0),
        "returning users": np.flatnonzero(activity > 0),
    }
    edges = sorted(set(cfg_bins))
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        name = f"{lo}+ positives" if hi is None else f"{lo}-{hi - 1} positives"
        out[name] = np.flatnonzero((activity >= lo) & ((activity < hi) if hi else True))
    return out
