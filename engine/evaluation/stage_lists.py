"""Each method's full lists for the held-out users, as (U, K) item matrices aligned with the
truth: recengine's stages (candidates, re-ranked, final), the two-tower order through the
served index, and the oracle orders from the generator's ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from engine.candidates import CandidateContext, default_sources, generate_candidates
from engine.config import EngineConfig
from engine.evaluation.baselines import SCORES_PER_CHUNK, top_of_scores
from engine.evaluation.holdout import Holdout
from engine.rerank.features import feature_frame
from engine.rerank.lists import ItemFacts, product_lists
from engine.rerank.ranker import score_frame
from engine.rerank.training import FittedRanker
from pipelines.progress import Report
from pipelines.synthetic import GroundTruth


@dataclass(frozen=True)
class StageLists:
    """recengine's lists at each stage, as (U, ·) item matrices aligned with the truth."""

    candidates: np.ndarray   # the candidate set (ordered by the re-ranker), every item
    pairs: pl.DataFrame      # user_idx, item_idx, score of every unseen candidate
    reranked: np.ndarray     # the candidates by re-ranker score, top kmax
    final: np.ndarray        # the final list after the business rules, top kmax


def recengine_lists(ctx: CandidateContext, ranker: FittedRanker, h: Holdout, cfg: EngineConfig,
                    kmax: int, report: Report) -> StageLists:
    """The candidate set, the re-ranked candidates and the final lists, in chunks of users;
    seen items are scored with their list (the features see the whole list, as in
    production) and then left out."""
    users = h.truth.users
    sources = default_sources(ctx)
    facts = ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors)
    cands, reranked, final = [], [], []
    width = 0
    for a in range(0, len(users), cfg.jobs.user_chunk):
        chunk = users[a:a + cfg.jobs.user_chunk]
        report(f"recengine lists {a + len(chunk):,}/{len(users):,} users")
        frame = feature_frame(generate_candidates(sources, chunk), ctx)
        scores = score_frame(ranker.booster, frame, ranker.names)
        keep = _unseen(frame, ctx.seen)
        kept = frame.filter(pl.Series(keep)).select("user_idx", "item_idx").with_columns(
            pl.Series("score", scores[keep]))
        cands.append(kept)
        width = max(width, int(kept.group_by("user_idx").len()["len"].max() or 0))
        exclude = {int(u): h.seen[int(u)].indices.tolist() for u in chunk}
        final.append(product_lists(frame, scores, facts, k=kmax, rules=cfg.rules,
                                   exclude=exclude).select("user_idx", "item_idx", "rank"))
    kept = pl.concat(cands)
    ordered = (kept.sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
               .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank")))
    return StageLists(to_matrix(ordered, users, max(width, 1)), kept,
                      to_matrix(ordered.filter(pl.col("rank") <= kmax), users, kmax),
                      to_matrix(pl.concat(final), users, kmax))


def _unseen(frame: pl.DataFrame, seen: pl.DataFrame) -> np.ndarray:
    """(N,) bool: the frame's (user_idx, item_idx) row is not among `seen`."""
    marked = seen.select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64),
                         pl.lit(True).alias("_seen"))
    return (frame.select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
            .join(marked, on=["user_idx", "item_idx"], how="left", maintain_order="left")
            ["_seen"].is_null().to_numpy())


def to_matrix(lists: pl.DataFrame, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) item_idx by rank (user_idx, item_idx, rank rows; rank from 1)."""
    out = np.full((len(users), k), -1, np.int64)
    row = np.searchsorted(users, lists["user_idx"].to_numpy())
    rank = lists["rank"].to_numpy().astype(np.int64) - 1
    ok = (row < len(users)) & (rank < k)
    ok[ok] = users[row[ok]] == lists["user_idx"].to_numpy()[ok]
    out[row[ok], rank[ok]] = lists["item_idx"].to_numpy()[ok]
    return out


def two_tower_lists(ctx: CandidateContext, h: Holdout, kmax: int) -> np.ndarray:
    """The two-tower model's full-corpus order through the served index."""
    users = h.truth.users
    out = np.full((len(users), kmax), -1, np.int64)
    for a in range(0, len(users), 4096):
        u = users[a:a + 4096]
        _, items = ctx.index.search(ctx.user_vectors[u], kmax,  # type: ignore[union-attr,index]
                                    exclude=[h.seen[int(x)].indices for x in u],
                                    allowed=h.eligible)
        out[a:a + len(u)] = items
    return out


def oracle_lists(cfg: EngineConfig, h: Holdout, kmax: int) -> np.ndarray | None:
    """The generator's true utility at the middle of the test window, same items allowed."""
    if cfg.data.ground_truth is None:
        return None
    gt = GroundTruth.load(cfg.data.ground_truth)
    fs = h.fs
    at = fs.test_start + timedelta(days=cfg.split.test_days or 7) / 2  # type: ignore[operator]
    item_ids = fs.vocabs.item.decode(pl.Series(np.arange(fs.vocabs.item.size)))
    gt_item = GroundTruth._rows(item_ids, gt.item_ids)
    gt_user = GroundTruth._rows(fs.vocabs.user.decode(pl.Series(h.truth.users)), gt.user_ids)
    out = np.full((len(h.truth.users), kmax), -1, np.int64)
    allowed = h.eligible & (gt_item >= 0)
    step = max(1, SCORES_PER_CHUNK // max(len(gt_item), 1))
    for a in range(0, len(gt_user), step):
        rows = gt_user[a:a + step]
        util = np.full((len(rows), len(gt_item)), -np.inf, np.float32)
        known = rows >= 0
        util[known] = gt.utility(rows[known], at)[:, np.maximum(gt_item, 0)]
        util[:, ~allowed] = -np.inf
        b = h.seen[h.truth.users[a:a + step]].tocoo()
        util[b.row, b.col] = -np.inf
        out[a:a + len(rows)] = top_of_scores(util, kmax)
    return out


def oracle_of_candidates(cfg: EngineConfig, h: Holdout, pairs: pl.DataFrame, kmax: int
                         ) -> np.ndarray:
    """The candidate set ordered by the true utility: the best any re-ranker could do with
    these candidates (the gap to the full oracle is what the candidate stage loses). Needs
    the generator's ground truth."""
    assert cfg.data.ground_truth is not None
    gt = GroundTruth.load(cfg.data.ground_truth)
    fs = h.fs
    at = fs.test_start + timedelta(days=cfg.split.test_days or 7) / 2  # type: ignore[operator]
    util = gt.pair_utility(fs.vocabs.user.decode(pairs["user_idx"]),
                           fs.vocabs.item.decode(pairs["item_idx"]), at)
    ordered = (pairs.with_columns(pl.Series("score", np.nan_to_num(util, nan=-np.inf)))
               .sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
               .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank"))
               .filter(pl.col("rank") <= kmax))
    return to_matrix(ordered, h.truth.users, kmax)
