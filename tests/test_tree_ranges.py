"""Tree ranges: predicting [start, stop) of a booster gives LightGBM's own range prediction,
and stays right while other threads predict other ranges of the same booster (LightGBM sets
the range on the shared model before each call, so a shared booster mixes ranges up)."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import polars as pl

from engine.rerank.config import RerankConfig
from engine.rerank.ranker import EarlyExit, RankData, score_frame, train_ranker
from engine.rerank.trees import predict_range


def _booster() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 5))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = np.clip(np.round(np.nan_to_num(x[:, 0] + 0.5 * x[:, 1]) + rng.normal(size=4000)), 0, 3)
    cfg = RerankConfig(num_boost_round=80)
    return train_ranker(RankData(x, y, np.full(100, 40)), list("abcde"), cfg), x


def test_a_range_predicts_what_lightgbm_predicts_for_it() -> None:
    booster, x = _booster()
    total = booster.current_iteration()
    for start, stop in [(0, total), (0, 7), (7, total), (30, 31)]:
        np.testing.assert_array_equal(
            predict_range(booster, x, start, stop),
            booster.predict(x, start_iteration=start, num_iteration=stop - start),
        )
    np.testing.assert_array_equal(
        predict_range(booster, x[:50], 3, 9, pred_leaf=True),
        booster.predict(x[:50], start_iteration=3, num_iteration=6, pred_leaf=True),
    )


def test_concurrent_early_exit_scores_equal_one_threads() -> None:
    booster, x = _booster()
    frame = pl.DataFrame(
        {"user_idx": np.repeat(np.arange(100), 40), **{n: x[:, j] for j, n in enumerate("abcde")}}
    )
    rows = [frame[a : a + 400] for a in range(0, 4000, 400)]
    exit_ = EarlyExit(trees=10, keep=15)
    want = [score_frame(booster, r, list("abcde"), exit_) for r in rows]
    whole = [score_frame(booster, r, list("abcde")) for r in rows]
    wrong: list[int] = []

    def work(i: int) -> None:
        for n in range(40):
            j = (i + n) % len(rows)
            got = score_frame(booster, rows[j], list("abcde"), exit_ if i % 2 else None)
            if not np.array_equal(got, want[j] if i % 2 else whole[j]):
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} of 320 concurrent scorings differ from one thread's"
