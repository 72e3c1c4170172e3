"""The compiled re-ranker scores exactly as LightGBM does (missing values included), is
compiled once per model into the cache, and falls back to LightGBM when it cannot compile."""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from engine.rerank import compiled
from engine.rerank.compiled import CompiledRanker, compiled_or_booster
from engine.rerank.ranker import RankData, RankerConfig, score_frame, train_ranker

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4))
    x[rng.random(x.shape) < 0.1] = np.nan  # nulls reach the ranker as NaN
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) > 0.5).astype(float)
    y += (np.nan_to_num(x[:, 2]) > 1).astype(float)
    data = RankData(x, y, np.full(100, 30))
    cfg = RankerConfig(num_boost_round=40, early_stopping_rounds=5, num_leaves=15,
                       min_data_in_leaf=20, learning_rate=0.1)
    return train_ranker(data, NAMES, cfg, valid=data)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECENGINE_CACHE", str(tmp_path))
    return tmp_path / "ranker"


def test_scores_equal_lightgbm_and_compile_once(booster: lgb.Booster, cache: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 4)) * 2
    x[rng.random(x.shape) < 0.2] = np.nan
    frame = pl.DataFrame({n: x[:, i] for i, n in enumerate(NAMES)})
    fast = CompiledRanker(booster)
    np.testing.assert_allclose(score_frame(fast, frame, NAMES),
                               score_frame(booster, frame, NAMES), rtol=0, atol=1e-9)
    assert fast.feature_name() == NAMES
    [obj] = cache.glob("*.o")
    stamp = obj.stat().st_mtime_ns
    again = CompiledRanker(booster)  # from the cache: not compiled a second time
    assert again.cache == obj and obj.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [obj.name]  # no temporary files left
    np.testing.assert_array_equal(again.predict(x), fast.predict(x))


def test_falls_back_to_lightgbm(booster: lgb.Booster, cache: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                caplog: pytest.LogCaptureFixture) -> None:
    real_import = builtins.__import__

    def no_lleaves(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "lleaves":
            raise ImportError("No module named 'lleaves'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lleaves)
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert compiled_or_booster(booster) is booster
    assert "scoring with LightGBM" in caplog.text
