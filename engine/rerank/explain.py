"""Why an item is in a list: its candidate sources, the re-ranker's largest feature
contributions (LightGBM `pred_contrib`, SHAP values of the trees), and any rule that acted."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl


def contributions(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """(N, F + 1) per-feature contributions and the bias; each row sums to the raw score."""
    return booster.predict(x, pred_contrib=True, num_iteration=booster.best_iteration or None)


def explain(booster: lgb.Booster, frame: pl.DataFrame, names: list[str], *, top: int = 3
            ) -> pl.Series:
    """One text per row of `frame`: "sources: ann,covisit; two_tower +0.41, count_7d +0.12,
    price_ratio -0.05" (the `top` contributions by size)."""
    x = frame.select([pl.col(n).cast(pl.Float64) for n in names]).to_numpy()
    contrib = contributions(booster, x)[:, :-1]
    order = np.argsort(-np.abs(contrib), axis=1)[:, :top]
    sources = frame["sources"].to_list() if "sources" in frame.columns else [None] * frame.height
    texts = []
    for r, (idx, src) in enumerate(zip(order, sources, strict=True)):
        parts = ", ".join(f"{names[j]} {contrib[r, j]:+.3f}" for j in idx)
        texts.append(f"sources: {src or '-'}; {parts}")
    return pl.Series("why", texts)
