"""Beyond accuracy: what a list does to the catalogue and to the user's view of it.

- coverage: share of the eligible catalogue that appears in at least one list
- novelty: mean self-information -log2(p_i) of listed items, p_i the share of users who
  interacted with item i in the fit window (add-one smoothed)
- diversity: intra-list diversity by category, the share of pairs in a list whose leaf
  categories differ
- popularity bias: mean popularity percentile (0 = least, 1 = most popular eligible item) of
  listed items
"""

from __future__ import annotations

import numpy as np


def beyond_accuracy(
    top: np.ndarray, *, counts: np.ndarray, category: np.ndarray, eligible: np.ndarray, n_users: int
) -> dict[str, float]:
    """The four figures above for lists `top` (U, k) of item indices (-1 padding)."""
    items = top[top >= 0]
    n_eligible = max(int(eligible.sum()), 1)
    info = -np.log2((counts + 1.0) / (n_users + 1.0))
    pct = popularity_percentile(counts, eligible)
    return {
        "coverage": float(len(np.unique(items)) / n_eligible),
        "novelty": float(info[items].mean()) if len(items) else float("nan"),
        "diversity": intra_list_diversity(top, category),
        "popularity_percentile": float(pct[items].mean()) if len(items) else float("nan"),
    }


def popularity_percentile(counts: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(n_items,) rank of each item's count among the eligible items, scaled to [0, 1]
    (ties share their mean rank)."""
    idx = np.flatnonzero(eligible)
    out = np.full(len(counts), np.nan)
    if len(idx) == 0:
        return out
    c = counts[idx]
    order = np.argsort(c, kind="stable")
    ranks = np.empty(len(c))
    ranks[order] = np.arange(len(c), dtype=np.float64)
    # mean rank within ties
    _uniq, inv = np.unique(c, return_inverse=True)
    mean_rank = np.bincount(inv, weights=ranks) / np.bincount(inv)
    out[idx] = mean_rank[inv] / max(len(c) - 1, 1)
    return out


def intra_list_diversity(top: np.ndarray, category: np.ndarray) -> float:
    """Mean over lists of the share of item pairs in different categories."""
    values = []
    for row in top:
        cats = category[row[row >= 0]]
        n = len(cats)
        if n < 2:
            continue
        _, per = np.unique(cats, return_counts=True)
        same = float((per * (per - 1)).sum()) / 2
        values.append(1.0 - same / (n * (n - 1) / 2))
    return float(np.mean(values)) if values else float("nan")
