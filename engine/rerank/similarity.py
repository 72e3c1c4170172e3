"""Vector features of (user, candidate) rows: how close the candidate is to the user's
two-tower vector, and to the items the user touched last (two-tower and content vectors).

The last items say what the user is after now, which the two-tower user vector (a pooled
summary of the whole history) blurs; the closest of them (max) and a recency-weighted profile
(mean) are both kept, since one strong match and a general drift are different signals.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.candidates.context import CandidateContext

CHUNK = 1 << 16


def row_dot(users: np.ndarray, items: np.ndarray, uv: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """(N,) uv[users[n]] . iv[items[n]], computed in chunks to bound memory."""
    out = np.empty(len(users), np.float32)
    for a in range(0, len(users), CHUNK):
        s = slice(a, a + CHUNK)
        out[s] = np.einsum("nd,nd->n", uv[users[s]], iv[items[s]])
    return out


def _recent_matrix(recent: pl.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, R) item indices and weights of each user's last R items (-1 / 0 padded)."""
    width = int(recent.group_by("user_idx").len()["len"].max() or 1) if recent.height else 1
    items = np.full((n_users, width), -1, np.int64)
    weights = np.zeros((n_users, width), np.float32)
    if recent.height:
        u = recent["user_idx"].to_numpy()
        slot = recent.select(pl.int_range(pl.len()).over("user_idx")).to_series().to_numpy()
        items[u, slot] = recent["item_idx"].to_numpy()
        weights[u, slot] = recent["weight"].to_numpy()
    return items, weights


def recent_similarity(users: np.ndarray, items: np.ndarray, recent: pl.DataFrame,
                      vectors: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(max, weighted mean) cosine of each row's item to the user's recent items, NaN for a
    user with none (LightGBM treats NaN as missing). `vectors` rows are unit length."""
    last, weight = _recent_matrix(recent, n_users)
    best = np.full(len(users), np.nan, np.float32)
    mean = np.full(len(users), np.nan, np.float32)
    for a in range(0, len(users), CHUNK):
        s = slice(a, a + CHUNK)
        idx, w = last[users[s]], weight[users[s]]                  # (n, R)
        sims = np.einsum("nd,nrd->nr", vectors[items[s]], vectors[np.maximum(idx, 0)])
        has = idx >= 0
        any_ = has.any(axis=1)
        best[s] = np.where(any_, np.where(has, sims, -np.inf).max(axis=1), np.nan)
        total = w.sum(axis=1)
        mean[s] = np.where(any_, (sims * w).sum(axis=1) / np.maximum(total, 1e-12), np.nan)
    return best, mean


def vector_features(df: pl.DataFrame, ctx: CandidateContext) -> dict[str, np.ndarray]:
    """two_tower (user . item), recent_tt_max / recent_tt_mean (two-tower item vectors of the
    last items) and content_sim / recent_content_max (content-only vectors), where the vectors
    exist."""
    u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
    n_users = ctx.fs.vocabs.user.size
    recent = ctx.recent(np.unique(u)).with_columns(pl.col("user_idx").cast(pl.Int64),
                                                   pl.col("item_idx").cast(pl.Int64))
    out: dict[str, np.ndarray] = {}
    if ctx.user_vectors is not None and ctx.item_vectors is not None:
        out["two_tower"] = row_dot(u, i, ctx.user_vectors, ctx.item_vectors)
        out["recent_tt_max"], out["recent_tt_mean"] = recent_similarity(
            u, i, recent, ctx.item_vectors, n_users)
    if ctx.content_vectors is not None:
        out["recent_content_max"], out["content_sim"] = recent_similarity(
            u, i, recent, ctx.content_vectors, n_users)
    return out
