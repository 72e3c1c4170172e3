"""Ad lists for a batch of users: eCPM = calibrated pCTR x bid, a reserve price, eligibility
(in flight, budget left, per-user frequency cap), and pacing.

Users are served in chunks, in the batch's order. Each ad shown spends its expected cost
(pCTR x bid, cost per click) from its campaign's daily budget; a campaign whose budget is spent
stops at once, within a chunk too (it overshoots by at most one ad's expected cost). Pacing keeps a small budget
from going to the first users of the batch (probabilistic throttling): for each chunk, a
campaign enters each user's auction with probability min(1, budget left / what it would spend
on all remaining users unthrottled, at this chunk's rate), so its spend follows the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from engine.ads.config import AuctionConfig


def rank_ads(
    users: np.ndarray,
    ads: np.ndarray,
    pctr: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    bid: np.ndarray,
    campaign: np.ndarray,
    budget: dict[int, float],
    shown_today: dict[tuple[int, int], int],
    cfg: AuctionConfig,
) -> tuple[pl.DataFrame, dict[int, float]]:
    """Top ads for every user and each campaign's expected spend.

    Args:
        users: user indices, in serving order. ads: eligible (in-flight) ad item indices.
        pctr: (user rows, ad columns) -> (U, A) calibrated click probabilities.
        bid, campaign: per ad (aligned with `ads`). budget: campaign -> daily budget.
        shown_today: (user, ad) -> impressions already shown today (frequency cap).

    Returns a frame (user_idx, rank, item_idx, pctr, bid, ecpm, pace: the campaign's chance
    to enter that chunk's auctions) and campaign -> expected spend.
    """
    spent = dict.fromkeys(budget, 0.0)
    column = {int(ad): j for j, ad in enumerate(ads)}
    capped: dict[int, list[int]] = {}
    for (u, ad), times in shown_today.items():
        if times >= cfg.frequency_cap and ad in column:
            capped.setdefault(u, []).append(column[ad])
    camps = np.unique(campaign)
    col_camp = np.searchsorted(camps, campaign)
    rng = np.random.default_rng(cfg.seed)
    k = min(cfg.ads_per_user, len(ads))
    out: list[pl.DataFrame] = []
    n = len(users)
    for a in range(0, n, cfg.chunk):
        chunk = users[a : a + cfg.chunk]
        p = pctr(chunk, ads)  # (U, A)
        ecpm = p * bid[None, :] * 1000.0
        ok = ecpm >= cfg.reserve_ecpm
        ok &= np.array([spent[int(c)] < budget[int(c)] for c in campaign])[None, :]
        for i, u in enumerate(chunk):
            for j in capped.get(int(u), ()):
                ok[i, j] = False
        pace = np.ones(len(camps))
        if cfg.pacing:
            # what each campaign would spend per user unthrottled, against what it has left
            rows, cols = _top(np.where(ok, ecpm, -np.inf), k)
            rate = np.bincount(
                col_camp[cols], weights=p[rows, cols] * bid[cols], minlength=len(camps)
            ) / len(chunk)
            left = np.array([budget[int(c)] - spent[int(c)] for c in camps])
            need = rate * (n - a)
            pace = np.where(need > 0, np.minimum(1.0, left / np.maximum(need, 1e-12)), 1.0)
            ok &= rng.random((len(chunk), len(camps)))[:, col_camp] < pace[col_camp][None, :]
        rows, cols = _top(np.where(ok, ecpm, -np.inf), k)
        keep = np.ones(len(rows), bool)
        for j, (c, cost) in enumerate(zip(campaign[cols], p[rows, cols] * bid[cols], strict=True)):
            if spent[int(c)] >= budget[int(c)]:  # spent within this chunk: no more of its ads
                keep[j] = False
            else:
                spent[int(c)] += float(cost)
        rows, cols = rows[keep], cols[keep]
        rank = np.concatenate(
            [np.arange(1, m + 1) for m in np.bincount(rows, minlength=len(chunk))]
        )
        out.append(
            pl.DataFrame(
                {
                    "user_idx": chunk[rows].astype(np.int64),
                    "rank": rank.astype(np.int32),
                    "item_idx": ads[cols].astype(np.int64),
                    "pctr": p[rows, cols],
                    "bid": bid[cols].astype(np.float64),
                    "ecpm": ecpm[rows, cols],
                    "pace": pace[col_camp[cols]],
                }
            )
        )
    frame = pl.concat(out) if out else pl.DataFrame()
    return frame, spent


def _top(score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each row's best `k` finite scores, rows ascending, best first."""
    top = np.argsort(-score, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(score)), top.shape[1])
    cols = top.ravel()
    keep = np.isfinite(score[rows, cols])
    return rows[keep], cols[keep]
