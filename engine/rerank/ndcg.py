"""NDCG@k of grouped scores, as LightGBM defines it (gain 2^rel - 1, log2 discount; a query
with no relevant row counts as 1)."""

from __future__ import annotations

import numpy as np


def mean_ndcg(y: np.ndarray, scores: np.ndarray, group: np.ndarray, k: int) -> float:
    """Mean over queries of DCG@k / ideal DCG@k; ties in score keep row order."""
    out, start = [], 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for size in group.astype(int):
        rel, s = y[start:start + size], scores[start:start + size]
        start += size
        gains = 2.0 ** rel - 1.0
        top = gains[np.argsort(-s, kind="stable")[:k]]
        ideal = np.sort(gains)[::-1][:k]
        best = float((ideal * discount[:len(ideal)]).sum())
        out.append(1.0 if best == 0 else float((top * discount[:len(top)]).sum()) / best)
    return float(np.mean(out)) if out else float("nan")
