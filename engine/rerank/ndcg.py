"""NDCG@k of grouped scores, as LightGBM defines it (gain 2^rel - 1, log2 discount; a query
with no relevant row counts as 1), and a paired bootstrap over queries for comparing two
orders of the same lists."""

from __future__ import annotations

import numpy as np


def ndcg_per_query(y: np.ndarray, scores: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    """(Q,) DCG@k / ideal DCG@k of each query; ties in score keep row order."""
    out = np.empty(len(group))
    start = 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for q, size in enumerate(group.astype(int)):
        rel, s = y[start : start + size], scores[start : start + size]
        start += size
        gains = 2.0**rel - 1.0
        top = gains[np.argsort(-s, kind="stable")[:k]]
        ideal = np.sort(gains)[::-1][:k]
        best = float((ideal * discount[: len(ideal)]).sum())
        out[q] = 1.0 if best == 0 else float((top * discount[: len(top)]).sum()) / best
    return out


def mean_ndcg(y: np.ndarray, scores: np.ndarray, group: np.ndarray, k: int) -> float:
    """Mean over queries of NDCG@k."""
    per = ndcg_per_query(y, scores, group, k)
    return float(per.mean()) if len(per) else float("nan")


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean of a - b, lower, upper): a `level` confidence interval of the mean per-query
    difference, resampling queries. Two orders of the same lists share each query's luck, so
    the paired difference is far tighter than two separate intervals."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)
