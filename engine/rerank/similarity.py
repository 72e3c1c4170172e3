"""Vector features of (user, candidate) rows: how close the candidate is to the user's
two-tower vector, and to the items the user touched last (two-tower and content vectors).

The last items say what the user is after now, which the two-tower user vector (a pooled
summary of the whole history) blurs; the closest of them (max) and a recency-weighted profile
(mean) are both kept, since one strong match and a general drift are different signals.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine import kernels
from engine.candidates.context import CandidateContext
from pipelines.scalars import int_or

CHUNK = 1 << 16


def row_dot(users: np.ndarray, items: np.ndarray, uv: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """(N,) uv[users[n]] . iv[items[n]], computed in chunks to bound memory."""
    out = np.empty(len(users), np.float32)
    for a in range(0, len(users), CHUNK):
        s = slice(a, a + CHUNK)
        out[s] = np.einsum("nd,nd->n", uv[users[s]], iv[items[s]])
    return out


def _recent_matrix(recent: pl.DataFrame, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(len(users), R) item indices and weights of the last R items of each of `users`
    (sorted, unique; -1 / 0 padded)."""
    width = int_or(recent.group_by("user_idx").len()["len"].max(), 1) if recent.height else 1
    items = np.full((len(users), width), -1, np.int64)
    weights = np.zeros((len(users), width), np.float32)
    if recent.height:
        u = np.searchsorted(users, recent["user_idx"].to_numpy())
        slot = recent.select(pl.int_range(pl.len()).over("user_idx")).to_series().to_numpy()
        items[u, slot] = recent["item_idx"].to_numpy()
        weights[u, slot] = recent["weight"].to_numpy()
    return items, weights


def recent_similarity(
    row: np.ndarray,
    items: np.ndarray,
    last: np.ndarray,
    weight: np.ndarray,
    vectors: np.ndarray,
    item_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(max, weighted mean) cosine of each row's item to its user's recent items (`last`,
    `weight`: the user's row of `_recent_matrix`, by `row`), NaN for a user with none
    (LightGBM treats NaN as missing). `vectors` rows are unit length.

    One (recent x items) product per user: the user's few recent vectors are read once, not
    gathered again for every candidate; the result of a row does not depend on the order of
    the rows.
    `item_rows`, when given, is `vectors[items]` already gathered."""
    best = np.full(len(items), np.nan, np.float32)
    mean = np.full(len(items), np.nan, np.float32)
    # a user's candidates in item order: BLAS gives a column a value that depends on its
    # place in the product, so the product is made in one order whatever order the rows
    # come in (the online arrays and the batch frames give a user's rows differently)
    order = np.lexsort((items, row))
    r = row[order]
    for a, b in zip(*kernels.run_bounds(np.asarray(r, np.int64)), strict=True):
        u = int(r[a])
        idx, w = last[u], weight[u]
        has = idx >= 0
        if not has.any():
            continue
        at = order[a:b]
        cand = np.take(vectors, items[at], axis=0) if item_rows is None else item_rows[at]
        # (recent x candidates): one BLAS product, and reductions over its long axis
        sims = np.take(vectors, idx[has], axis=0) @ cand.T
        w = w[has].astype(np.float32)
        mean[at] = (w @ sims) / max(float(w.sum()), 1e-12)
        best[at] = sims.max(axis=0)
    return best, mean


def vector_features(
    df: pl.DataFrame, ctx: CandidateContext, recent: pl.DataFrame
) -> dict[str, np.ndarray]:
    """two_tower (user . item), recent_tt_max / recent_tt_mean (two-tower item vectors of the
    last items) and content_sim / recent_content_max (content-only vectors), where the vectors
    exist; `recent` is `ctx.recent` of the frame's users (Int64 keys)."""
    u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
    users, row = np.unique(u, return_inverse=True)
    last, weight = _recent_matrix(recent, users)
    return vector_columns(ctx, u, i, row, last, weight)


def vector_columns(
    ctx: CandidateContext,
    users: np.ndarray,
    items: np.ndarray,
    row: np.ndarray,
    last: np.ndarray,
    weight: np.ndarray,
) -> dict[str, np.ndarray]:
    """The vector features of rows (`users[r]`, `items[r]`), `row[r]` the user's row of the
    recent matrix (`last`, `weight`)."""
    out: dict[str, np.ndarray] = {}
    if ctx.user_vectors is not None and ctx.item_vectors is not None:
        if len(items) <= CHUNK:  # the candidates' item vectors gathered once for both
            rows = np.take(ctx.item_vectors, items, axis=0)
            out["two_tower"] = np.einsum("nd,nd->n", ctx.user_vectors[users], rows)
        else:
            rows = None
            out["two_tower"] = row_dot(users, items, ctx.user_vectors, ctx.item_vectors)
        out["recent_tt_max"], out["recent_tt_mean"] = recent_similarity(
            row, items, last, weight, ctx.item_vectors, rows
        )
    if ctx.content_vectors is not None:
        out["recent_content_max"], out["content_sim"] = recent_similarity(
            row, items, last, weight, ctx.content_vectors
        )
    return out
