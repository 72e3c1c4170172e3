"""Why an item is in a list: the re-ranker's largest feature contributions (LightGBM
`pred_contrib`, SHAP values of the trees). `lists.with_explanations` adds the candidate
sources and the rules that acted."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl

from engine.rerank.ranker import feature_matrix


def contributions(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """(N, F + 1) per-feature contributions and the bias; each row sums to the raw score."""
    return booster.predict(x, pred_contrib=True, num_iteration=booster.best_iteration or None)


def contribution_texts(booster: lgb.Booster, frame: pl.DataFrame, names: list[str], *,
                       top: int = 3) -> list[str]:
    """One text per row of `frame`: "two_tower +0.41, count_7d +0.12, price_ratio -0.05"
    (the `top` contributions by size)."""
    if frame.height == 0:
        return []
    x = feature_matrix(frame, names)
    contrib = contributions(booster, x)[:, :-1]
    order = np.argsort(-np.abs(contrib), axis=1)[:, :top]
    return [", ".join(f"{names[j]} {contrib[r, j]:+.3f}" for j in idx)
            for r, idx in enumerate(order)]
