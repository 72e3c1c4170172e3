"""Predictions over a range of a booster's trees that stay right under concurrent calls.

LightGBM's `predict` sets the iteration range on the shared model (`InitPredict`) before it
scores, under a lock that other predictions share: two threads asking one `Booster` for
different ranges (the early exit's first trees and the rest, the whole model, TreeSHAP's
first trees) can score with each other's range. Each range here is a `Booster` of its own,
built once from the model's text, and is only ever asked for all of its trees.
"""

from __future__ import annotations

import threading
import weakref

import lightgbm as lgb
import numpy as np

_ranges: weakref.WeakKeyDictionary[lgb.Booster, dict[tuple[int, int], lgb.Booster]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def model_trees(booster: lgb.Booster) -> int:
    """Trees the lists score with: the best iteration's, else all."""
    return booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()


def tree_range(booster: lgb.Booster, start: int, stop: int) -> lgb.Booster:
    """A booster of trees [start, stop) of `booster` (built on the first call, then shared)."""
    if not 0 <= start < stop:
        raise ValueError(f"tree range [{start}, {stop}) is empty")
    with _lock:
        cached = _ranges.setdefault(booster, {})
        part = cached.get((start, stop))
        if part is None:
            part = lgb.Booster(
                model_str=booster.model_to_string(start_iteration=start, num_iteration=stop - start)
            )
            cached[(start, stop)] = part
    return part


def dense(prediction: object) -> np.ndarray:
    """A LightGBM prediction of dense rows: an array (LightGBM gives its sparse forms only
    for sparse input)."""
    if not isinstance(prediction, np.ndarray):
        raise TypeError(f"expected an array of predictions, got {type(prediction).__name__}")
    return prediction


def predict_range(
    booster: lgb.Booster,
    x: np.ndarray,
    start: int,
    stop: int,
    *,
    pred_leaf: bool = False,
    pred_contrib: bool = False,
) -> np.ndarray:
    """`booster.predict(x, start_iteration=start, num_iteration=stop - start, ...)`, safe
    while other threads predict other ranges of the same booster."""
    part = tree_range(booster, start, stop)
    return dense(part.predict(x, pred_leaf=pred_leaf, pred_contrib=pred_contrib))
