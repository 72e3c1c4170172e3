"""Each method's full lists for the held-out users, as (U, K) item matrices aligned with the
truth: recengine's stages (candidates, re-ranked, final), the two-tower order through the
served index, and the oracle orders from the generator's ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from engine.candidates import ModelContext
from engine.config import EngineConfig
from engine.evaluation.baselines import top_items
from engine.evaluation.holdout import Holdout
from engine.index.batch import search_all
from engine.rerank.training import FittedRanker
from engine.scoring import ListScorer
from pipelines.dataset import FeatureSet
from pipelines.progress import Report
from pipelines.scalars import int_or
from pipelines.synthetic import GroundTruth


@dataclass(frozen=True)
class StageLists:
    """recengine's lists at each stage, as (U, ·) item matrices aligned with the truth."""

    candidates: np.ndarray  # the candidate set (ordered by the re-ranker), every item
    pairs: pl.DataFrame  # user_idx, item_idx, score of every unseen candidate
    reranked: np.ndarray  # the candidates by re-ranker score, top kmax
    final: np.ndarray  # the final list after the business rules, top kmax


def recengine_lists(
    ctx: ModelContext,
    ranker: FittedRanker,
    h: Holdout,
    cfg: EngineConfig,
    kmax: int,
    report: Report,
) -> StageLists:
    """The candidate set, the re-ranked candidates and the final lists, in chunks of users;
    seen items are scored with their list (the features see the whole list, as in
    production) and then left out."""
    users = h.truth.users
    scorer = ListScorer.build(ctx, ranker.ranker, cfg.rules, cfg.rerank, names=ranker.names)
    cands, final = [], []
    for a in range(0, len(users), cfg.jobs.user_chunk):
        chunk = users[a : a + cfg.jobs.user_chunk]
        report(f"recengine lists {a + len(chunk):,}/{len(users):,} users")
        scored = scorer.scored(chunk, k=kmax)
        u, i = scored.users[scored.row], scored.items
        keep = np.asarray(h.seen[u, i]).ravel() == 0
        cands.append(
            pl.DataFrame({"user_idx": u[keep], "item_idx": i[keep], "score": scored.scores[keep]})
        )
        exclude = {int(x): h.seen[int(x)].indices.tolist() for x in chunk}
        final.append(
            scorer.rule(scored, k=kmax, exclude=exclude)
            .frame()
            .select("user_idx", "item_idx", "rank")
        )
    kept = pl.concat(cands)
    ordered = ranked(kept)
    width = max(int_or(ordered["rank"].max(), 0), 1)
    return StageLists(
        to_matrix(ordered, users, width),
        kept,
        to_matrix(ordered, users, kmax),
        to_matrix(pl.concat(final), users, kmax),
    )


def ranked(pairs: pl.DataFrame) -> pl.DataFrame:
    """`pairs` (user_idx, item_idx, score) with each user's rank by score from 1 (ties by
    item)."""
    return pairs.sort(
        ["user_idx", "score", "item_idx"], descending=[False, True, False]
    ).with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank"))


def to_matrix(lists: pl.DataFrame, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) item_idx by rank (user_idx, item_idx, rank rows; rank from 1; ranks
    past k are left out)."""
    out = np.full((len(users), k), -1, np.int64)
    row = np.searchsorted(users, lists["user_idx"].to_numpy())
    rank = lists["rank"].to_numpy().astype(np.int64) - 1
    ok = (row < len(users)) & (rank < k)
    ok[ok] = users[row[ok]] == lists["user_idx"].to_numpy()[ok]
    out[row[ok], rank[ok]] = lists["item_idx"].to_numpy()[ok]
    return out


def two_tower_lists(ctx: ModelContext, h: Holdout, kmax: int) -> np.ndarray:
    """The two-tower model's full-corpus order through the served index."""
    users = h.truth.users
    out = np.full((len(users), kmax), -1, np.int64)
    for rows, _, items in search_all(
        ctx.index,
        ctx.user_vectors[users],
        kmax,
        allowed=h.eligible,
        exclude=lambda r: [h.seen[int(x)].indices for x in users[r]],
    ):
        out[rows] = items
    return out


@dataclass(frozen=True)
class Oracle:
    """The generator's true utility at the middle of the test window, or at the end of the fit
    window for per-user splits (generated data only). Where the generator chains items, each
    user's last item in the fit window says which successor the truth favours."""

    truth: GroundTruth
    at: datetime
    last: np.ndarray | None = None  # (ground-truth users,) item row of each one's last item

    @classmethod
    def of(cls, cfg: EngineConfig, fs: FeatureSet) -> Oracle | None:
        if cfg.data.ground_truth is None:
            return None
        gt = GroundTruth.load(cfg.data.ground_truth)
        at = (
            fs.test_start + timedelta(days=cfg.split.test_days or 7) / 2
            if fs.test_start is not None
            else fs.as_of
        )
        last = (
            fs.window_interactions().sort("ts").group_by("user_idx").agg(pl.col("item_idx").last())
        )
        rows = np.full(len(gt.user_ids), -1, np.int64)
        u = gt.rows_of(fs.vocabs.user.decode(last["user_idx"]), gt.user_ids)
        i = gt.rows_of(fs.vocabs.item.decode(last["item_idx"]), gt.item_ids)
        rows[u[u >= 0]] = i[u >= 0]
        return cls(gt, at, rows)

    def lists(self, h: Holdout, kmax: int) -> np.ndarray:
        """The best `kmax` eligible unseen items of every held-out user by true utility."""
        fs, gt = h.fs, self.truth
        gt_item = gt.rows_of(
            fs.vocabs.item.decode(pl.Series(np.arange(fs.vocabs.item.size))), gt.item_ids
        )
        gt_user = gt.rows_of(
            fs.vocabs.user.decode(pl.Series(np.arange(fs.vocabs.user.size))), gt.user_ids
        )

        def utility(users: np.ndarray) -> np.ndarray:
            rows = gt_user[users]
            out = np.full((len(rows), len(gt_item)), -np.inf, np.float32)
            known = rows >= 0
            last = None if self.last is None else self.last[rows[known]]
            out[known] = gt.utility(rows[known], self.at, last_items=last)[
                :, np.maximum(gt_item, 0)
            ]
            return out

        return top_items(utility, h.truth.users, h.seen, h.eligible & (gt_item >= 0), kmax)

    def order_of(self, h: Holdout, pairs: pl.DataFrame, kmax: int) -> np.ndarray:
        """The candidate `pairs` ordered by true utility: the best any re-ranker could do with
        these candidates (the gap to `lists` is what the candidate stage loses)."""
        fs = h.fs
        last = None
        if self.last is not None:
            gt_user = self.truth.rows_of(
                fs.vocabs.user.decode(pairs["user_idx"]), self.truth.user_ids
            )
            rows = np.where(gt_user >= 0, self.last[np.maximum(gt_user, 0)], -1)
            ids = self.truth.item_ids.gather(np.maximum(rows, 0))
            last = pl.select(pl.when(pl.Series(rows >= 0)).then(ids)).to_series()
        util = self.truth.pair_utility(
            fs.vocabs.user.decode(pairs["user_idx"]),
            fs.vocabs.item.decode(pairs["item_idx"]),
            self.at,
            last_item_ids=last,
        )
        return to_matrix(
            ranked(pairs.with_columns(pl.Series("score", np.nan_to_num(util, nan=-np.inf)))),
            h.truth.users,
            kmax,
        )
