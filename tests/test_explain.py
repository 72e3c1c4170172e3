"""Explanations of the re-ranker's scores: every row's contributions and bias sum to its raw
score whichever trees TreeSHAP explains (none, some, more than the model has), the path
attribution is TreeSHAP on single-split trees, and the texts name the features that drive the
score."""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from engine.config import RulesConfig
from engine.rerank.config import RerankConfig
from engine.rerank.explain import contribution_texts, contributions, path_table
from engine.rerank.lists import ItemFacts, product_lists, with_explanations
from engine.rerank.ranker import RankData, train_ranker

NAMES = ["a", "b", "c", "d"]


def ranking_data(seed: int = 0, queries: int = 40, per: int = 25) -> RankData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(queries * per, len(NAMES)))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take LightGBM's default branch
    s = 1.5 * np.nan_to_num(x[:, 1]) + 0.5 * np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 2])
    y = np.digitize(s + 0.3 * rng.normal(size=len(s)), [0.5, 1.5, 2.5]).astype(float)
    return RankData(x, y, np.full(queries, per))


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return train_ranker(
        ranking_data(),
        NAMES,
        RerankConfig(num_boost_round=40, num_leaves=15, min_data_in_leaf=10, learning_rate=0.1),
    )


@pytest.mark.parametrize("shap_trees", [0, 1, 10, 40, 500])
def test_contributions_sum_to_the_raw_score(booster: lgb.Booster, shap_trees: int) -> None:
    x = ranking_data(seed=1).x
    contrib = contributions(booster, x, shap_trees=shap_trees)
    assert contrib.shape == (len(x), len(NAMES) + 1)
    np.testing.assert_allclose(
        contrib.sum(axis=1), booster.predict(x, raw_score=True), rtol=0, atol=1e-9
    )
    # the bias is the model's expected score, the same whichever trees TreeSHAP explains
    shap_bias = booster.predict(x[:1], pred_contrib=True)[0, -1]
    np.testing.assert_allclose(contrib[:, -1], shap_bias, rtol=0, atol=1e-9)


def test_shap_trees_beyond_the_model_is_treeshap(booster: lgb.Booster) -> None:
    x = ranking_data(seed=2).x
    np.testing.assert_array_equal(
        contributions(booster, x, shap_trees=10_000), booster.predict(x, pred_contrib=True)
    )


def test_only_the_best_iteration_is_explained(booster: lgb.Booster) -> None:
    x = ranking_data(seed=3).x
    short = lgb.Booster(model_str=booster.model_to_string())
    short.best_iteration = 25  # as an early-stopped fit leaves it
    for shap_trees in (0, 10, 100):
        np.testing.assert_allclose(
            contributions(short, x, shap_trees=shap_trees).sum(axis=1),
            short.predict(x, num_iteration=25),
            rtol=0,
            atol=1e-9,
        )


def test_path_attribution_is_treeshap_on_single_splits() -> None:
    data = ranking_data(seed=4)
    stumps = train_ranker(
        data,
        NAMES,
        RerankConfig(num_boost_round=30, num_leaves=2, min_data_in_leaf=10, learning_rate=0.2),
    )
    np.testing.assert_allclose(
        contributions(stumps, data.x, shap_trees=0),
        stumps.predict(data.x, pred_contrib=True),
        rtol=0,
        atol=1e-9,
    )


def test_the_path_table_is_built_once_per_model(booster: lgb.Booster) -> None:
    assert path_table(booster, 0, 40) is path_table(booster, 0, 40)
    assert contributions(booster, np.empty((0, len(NAMES)))).shape == (0, len(NAMES) + 1)


def test_texts_name_the_leading_feature(booster: lgb.Booster) -> None:
    x = ranking_data(seed=5).x
    frame = pl.DataFrame({n: x[:, j] for j, n in enumerate(NAMES)})
    texts = contribution_texts(booster, frame, NAMES, top=2)
    assert len(texts) == len(x)
    assert all(re.fullmatch(r"[a-d] [+-]\d+\.\d{3}, [a-d] [+-]\d+\.\d{3}", t) for t in texts)
    assert np.mean([t.startswith("b ") for t in texts]) > 0.6  # b drives the label
    # the text is the largest contribution, with its value
    contrib = contributions(booster, x)[:, :-1]
    j = np.argmax(np.abs(contrib), axis=1)
    assert all(
        t.startswith(f"{NAMES[k]} {contrib[r, k]:+.3f}")
        for r, (t, k) in enumerate(zip(texts, j, strict=True))
    )


def test_lists_explain_their_rows_in_the_same_format(booster: lgb.Booster) -> None:
    rng = np.random.default_rng(6)
    data = ranking_data(seed=6, queries=5)
    frame = pl.DataFrame(
        {
            "user_idx": np.repeat(np.arange(1, 6), 25),
            "item_idx": np.tile(np.arange(1, 26), 5),
            "sources": "ann",
            **{n: data.x[:, j] for j, n in enumerate(NAMES)},
        }
    )
    facts = ItemFacts(
        brand=rng.integers(0, 3, 26), category=rng.integers(0, 3, 26), eligible=np.ones(26, bool)
    )
    lists = product_lists(
        frame, booster.predict(data.x), facts, k=4, rules=RulesConfig(max_per_brand=2)
    )
    lists = with_explanations(lists, frame, booster, NAMES)
    assert lists.height == 20
    for why in lists["why"].to_list():
        assert re.fullmatch(
            r"sources: ann; [a-d] [+-]\d+\.\d{3}(, [a-d] [+-]\d+\.\d{3}){2}"
            r"(; rules: .+)?",
            why,
        ), why
