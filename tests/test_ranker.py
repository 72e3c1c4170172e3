"""The LambdaRank wrapper: on LightGBM's own lambdarank example it gives exactly what plain
`lightgbm.train` gives with the same parameters, and clears LightGBM's own NDCG thresholds;
its text model round-trips; query groups are checked."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from engine.rerank.ndcg import mean_ndcg
from engine.rerank.ranker import RankData, RankerConfig, load_ranker, save_ranker, train_ranker

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lightgbm-lambdarank"
needs_example = pytest.mark.skipif(not (EXAMPLE / "rank.train").is_file(),
                                   reason="LightGBM's lambdarank example is not in ../shared/datasets")


def load(name: str) -> RankData:
    x, y = load_svmlight_file(str(EXAMPLE / name))
    return RankData(x.toarray(), y, np.loadtxt(EXAMPLE / f"{name}.query", dtype=np.int64))


CFG = RankerConfig(objective="lambdarank", num_boost_round=50, early_stopping_rounds=10,
                   learning_rate=0.1, feature_fraction=1.0, ndcg_at=3, num_leaves=31,
                   min_data_in_leaf=20, lambda_l2=0.0)


@needs_example
def test_matches_plain_lightgbm_on_its_lambdarank_example() -> None:
    train, test = load("rank.train"), load("rank.test")
    names = [f"f{i}" for i in range(train.x.shape[1])]
    ours = train_ranker(train, names, CFG, valid=test)
    dtrain = lgb.Dataset(train.x, label=train.y, group=train.group, feature_name=names)
    dvalid = lgb.Dataset(test.x, label=test.y, group=test.group, reference=dtrain)
    plain = lgb.train(CFG.params(), dtrain, num_boost_round=50, valid_sets=[dvalid],
                      callbacks=[lgb.early_stopping(10, verbose=False)])
    assert ours.best_iteration == plain.best_iteration
    np.testing.assert_array_equal(ours.predict(test.x, num_iteration=ours.best_iteration),
                                  plain.predict(test.x, num_iteration=plain.best_iteration))
    scores = ours.predict(test.x, num_iteration=ours.best_iteration)
    # LightGBM's own thresholds for this example (LGBMRanker, 50 trees, early stopping 10)
    assert mean_ndcg(test.y, scores, test.group, 1) > 0.5674
    assert mean_ndcg(test.y, scores, test.group, 3) > 0.578
    assert mean_ndcg(test.y, scores, test.group, 3) == pytest.approx(
        ours.best_score["valid_0"]["ndcg@3"], abs=1e-9)


def test_text_model_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=600) > 0.8).astype(float) * 2
    data = RankData(x, y, np.full(30, 20))
    booster = train_ranker(data, ["a", "b", "c", "d"], RankerConfig(num_boost_round=20))
    save_ranker(booster, tmp_path)
    back = load_ranker(tmp_path)
    np.testing.assert_allclose(back.predict(x), booster.predict(x))
    assert (tmp_path / "model.txt").read_text().startswith("tree")
    assert back.feature_name() == ["a", "b", "c", "d"]


def test_query_groups_must_cover_the_rows() -> None:
    with pytest.raises(ValueError, match="query groups"):
        RankData(np.zeros((10, 2)), np.zeros(10), np.array([4, 5]))


def test_explanations_name_the_largest_contributions() -> None:
    import polars as pl

    from engine.rerank.explain import contribution_texts, contributions

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = (x[:, 1] > 0.5).astype(float)
    booster = train_ranker(RankData(x, y, np.full(20, 20)), ["a", "b", "c"],
                           RankerConfig(num_boost_round=15, min_data_in_leaf=20))
    contrib = contributions(booster, x)
    np.testing.assert_allclose(contrib.sum(axis=1), booster.predict(x), rtol=1e-6, atol=1e-9)
    frame = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    why = contribution_texts(booster, frame, ["a", "b", "c"], top=1)
    assert len(why) == 400
    assert np.mean([w.startswith("b ") for w in why]) > 0.8  # b drives the label, so it leads
