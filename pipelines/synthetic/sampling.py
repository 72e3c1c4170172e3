"""Vectorised sampling helpers: alias tables per group, Gumbel-max choice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupedAlias:
    """Walker alias tables for sampling an item within a group with probability ∝ weight.

    Items are laid out sorted by group; `start[g]`, `size[g]` give each group's slice. Sampling
    is O(1) per draw and fully vectorised.
    """

    order: np.ndarray  # (I,) item ids sorted by group
    start: np.ndarray  # (G,)
    size: np.ndarray  # (G,)
    prob: np.ndarray  # (I,) acceptance probability of slot j
    alias: np.ndarray  # (I,) slot index used when slot j is rejected

    @classmethod
    def build(cls, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> GroupedAlias:
        order = np.argsort(groups, kind="stable")
        size = np.bincount(groups, minlength=n_groups)
        start = np.concatenate([[0], np.cumsum(size)[:-1]])
        prob = np.ones(len(order))
        alias = np.arange(len(order))
        w_sorted = weights[order].astype(np.float64)
        for g in range(n_groups):
            s, n = start[g], size[g]
            if n == 0:
                continue
            p = w_sorted[s : s + n] * n / w_sorted[s : s + n].sum()
            small = list(np.flatnonzero(p < 1.0))
            large = list(np.flatnonzero(p >= 1.0))
            while small and large:
                lo, hi = small.pop(), large[-1]
                prob[s + lo] = p[lo]
                alias[s + lo] = s + hi
                p[hi] -= 1.0 - p[lo]
                if p[hi] < 1.0:
                    large.pop()
                    small.append(hi)
        return cls(order=order, start=start, size=size, prob=prob, alias=alias)

    def sample(self, groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `k` items (with replacement) for each entry of `groups`: shape (len(groups), k)."""
        n = self.size[groups][:, None]
        slot = self.start[groups][:, None] + (rng.random((len(groups), k)) * n).astype(np.int64)
        keep = rng.random((len(groups), k)) < self.prob[slot]
        return self.order[np.where(keep, slot, self.alias[slot])]


def sample_rows(cdf_rows: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling of one column per requested row of a row-normalised CDF matrix."""
    n_rows, n_cols = cdf_rows.shape
    flat = (cdf_rows + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(idx - rows * n_cols, n_cols - 1)


def gumbel_argmax(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one column per row with probability softmax(logits) (Gumbel-max trick)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape).astype(logits.dtype), axis=1)
