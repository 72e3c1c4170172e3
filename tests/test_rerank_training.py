"""Training lists of the re-ranker: one set per cutoff, each with features as of its cutoff
(counts only from before it) and labels only from the `label_days` after it; query groups
are (cutoff, user); the ranker fits on them and saves as text."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from embeddings.config import ModelConfig, TrainConfig
from engine.candidates import CandidatesConfig
from engine.config import EngineConfig
from engine.rerank.config import RerankConfig
from engine.rerank.dataset import rank_data
from engine.rerank.ranker import load_ranker, save_ranker
from engine.rerank.training import fit_ranker, shifted, training_lists
from pipelines.config import PipelineConfig
from pipelines.dataset import FeatureSet, build_features

STEP = 7.0


@pytest.fixture(scope="module")
def cfg(small_config: PipelineConfig) -> EngineConfig:
    return EngineConfig(
        **small_config.model_dump(exclude={"model", "train"}),
        model=ModelConfig(dim=16, embedding_dim=16, hidden=(32,)),
        train=TrainConfig(epochs=1, batch_size=256, seed=5),
        candidates=CandidatesConfig(
            ann=30, covisit=20, content=10, trending=10, repeat=5, cold_user=10
        ),
        rerank=RerankConfig(
            training_cutoffs=2,
            cutoff_step_days=STEP,
            label_days=7.0,
            min_data_in_leaf=5,
            num_boost_round=30,
            early_stopping_rounds=10,
            min_lists=50,
        ),
    )


@pytest.fixture(scope="module")
def lists(cfg: EngineConfig, small_features: FeatureSet) -> pl.DataFrame:
    return training_lists(cfg, small_features.valid_start, epochs=1)


def test_shifted_moves_the_split(cfg: EngineConfig, small_features: FeatureSet) -> None:
    at = small_features.valid_start - timedelta(days=STEP)
    fs = build_features(shifted(cfg, at, 7.0))
    assert fs.as_of == at and fs.test_start == at + timedelta(days=7)
    assert fs.window_interactions()["ts"].max() < at


def test_each_cutoff_sees_only_its_past_and_is_labelled_by_its_future(
    cfg: EngineConfig, small_features: FeatureSet, lists: pl.DataFrame
) -> None:
    assert sorted(lists["cutoff"].unique().to_list()) == [0, 1]
    inter = small_features.interactions
    for n in (0, 1):
        at = small_features.valid_start - timedelta(days=n * STEP)
        mine = lists.filter(pl.col("cutoff") == n)
        # popularity features count interactions before the cutoff only
        before = (
            inter.filter(pl.col("ts") < at)
            .group_by(pl.col("item_idx").cast(pl.Int64))
            .agg(pl.len().alias("want"))
        )
        got = (
            mine.select("item_idx", "count_all")
            .unique()
            .join(before, on="item_idx", how="left")
            .with_columns(pl.col("want").fill_null(0))
        )
        assert (got["count_all"] == got["want"]).all()
        # every positive label is an interaction in [at, at + label_days)
        window = (
            inter.filter((pl.col("ts") >= at) & (pl.col("ts") < at + timedelta(days=7)))
            .select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
            .unique()
        )
        pos = mine.filter(pl.col("label") > 0).select("user_idx", "item_idx")
        assert pos.height > 0
        assert pos.join(window, on=["user_idx", "item_idx"], how="anti").height == 0


def test_query_groups_are_lists_of_one_user_at_one_cutoff(lists: pl.DataFrame) -> None:
    data = rank_data(lists, ["count_all"])
    assert len(data.group) == lists.select("cutoff", "user_idx").n_unique()
    assert lists.select(pl.struct("cutoff", "user_idx", "item_idx").is_unique().all()).item()
    users_in_both = set(lists.filter(pl.col("cutoff") == 0)["user_idx"].to_list()) & set(
        lists.filter(pl.col("cutoff") == 1)["user_idx"].to_list()
    )
    assert users_in_both, "a user active at both cutoffs has two lists"


def test_ranker_fits_and_round_trips(
    tmp_path: Path, cfg: EngineConfig, lists: pl.DataFrame
) -> None:
    fitted = fit_ranker(lists, cfg)
    assert fitted.fallback is None and isinstance(fitted.ranker, lgb.Booster)
    assert fitted.holdout_ndcg > max(fitted.orders.values())  # beats every signal alone
    assert fitted.holdout_ndcg > fitted.orders["two_tower"] + 0.02  # the retrieval order too
    assert "two_tower" in fitted.names and "cutoff" not in fitted.names
    back = load_ranker(save_ranker(fitted.ranker, tmp_path))
    x = rank_data(lists, fitted.names).x
    np.testing.assert_allclose(
        back.predict(x), fitted.ranker.predict(x, num_iteration=fitted.ranker.best_iteration)
    )


def test_list_mode_takes_per_user_cutoffs_where_global_ones_catch_few_users(
    cfg: EngineConfig, small_features: FeatureSet
) -> None:
    """Weekly-active users: the global cutoffs' label windows hold them. Users scattered in
    time (here: a per-user split, or label windows shrunk to an hour): per-user cutoffs."""
    from engine.rerank.training import list_mode
    from pipelines.validate import validate_tables

    tables = validate_tables(cfg.data, cfg.columns)
    at = small_features.valid_start
    assert list_mode(cfg, tables, at) == "temporal"
    hour = cfg.model_copy(
        update={
            "rerank": cfg.rerank.model_copy(update={"label_days": 1 / 24, "training_cutoffs": 1})
        }
    )
    assert list_mode(hour, tables, at) == "per_user"
    holdout = cfg.model_copy(update={"split": cfg.split.model_copy(update={"strategy": "holdout"})})
    assert list_mode(holdout, tables, at) == "per_user"


def test_per_user_lists_label_users_after_their_own_cutoff(cfg: EngineConfig) -> None:
    per_user = cfg.model_copy(
        update={"rerank": cfg.rerank.model_copy(update={"lists": "per_user", "target_lists": 1})}
    )
    got = training_lists(per_user, build_features(cfg).as_of, epochs=1, exclude_test=True)
    assert got["cutoff"].unique().to_list() == [0]  # one cut reaches the target
    n_lists = got.select("user_idx").n_unique()
    assert n_lists > 100  # most of the 400 users give a list
    assert got.group_by("user_idx").agg((pl.col("label") > 0).any())["label"].all()


def test_per_user_lists_cut_again_below_the_target(cfg: EngineConfig) -> None:
    """Fewer lists than `target_lists`: a second cut before each user's first labels, whose
    positives are items of the rows just before them, never of the first cut's labels."""
    from pipelines.split import SPLIT, per_user_cutoff

    per_user = cfg.model_copy(
        update={
            "rerank": cfg.rerank.model_copy(
                update={"lists": "per_user", "target_lists": 10_000, "per_user_cuts": 2}
            )
        }
    )
    got = training_lists(per_user, build_features(cfg).as_of, epochs=1, exclude_test=True)
    assert sorted(got["cutoff"].unique().to_list()) == [0, 1]
    fs = build_features(cfg)
    rows = fs.interactions.select("user_idx", "item_idx", "ts", SPLIT).with_columns(
        pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64)
    )
    for step in (0, 1):
        cut = per_user_cutoff(
            rows.lazy(), per_user.rerank.label_share, drop_test=True, step=step, user="user_idx"
        ).collect()
        label_rows = cut.filter(pl.col(SPLIT) == "valid").select("user_idx", "item_idx")
        positives = got.filter((pl.col("cutoff") == step) & (pl.col("label") > 0))
        assert positives.height > 50
        assert positives.join(label_rows, on=["user_idx", "item_idx"], how="anti").is_empty()
    first = got.filter(pl.col("cutoff") == 0).select("user_idx").n_unique()
    assert got.select("cutoff", "user_idx").n_unique() > first


def _booster(leaves: int, rounds: int) -> lgb.Booster:
    rng = np.random.default_rng(leaves)
    x = rng.standard_normal((2000, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] > 0.3).astype(float)
    return lgb.train(
        {
            "objective": "binary",
            "num_leaves": leaves,
            "min_data_in_leaf": 5,
            "verbose": -1,
            "seed": 0,
        },
        lgb.Dataset(x, y),
        num_boost_round=rounds,
    )


def test_predict_cost_counts_trees_times_their_mean_leaf_depth() -> None:
    from engine.rerank.training import predict_cost

    stumps, deep = _booster(2, 10), _booster(63, 10)
    assert predict_cost(stumps) == pytest.approx(10.0)  # ten trees of one split: depth 1
    assert predict_cost(deep) > 4 * predict_cost(stumps)
    assert predict_cost(_booster(63, 20)) > predict_cost(deep)


def test_the_cheaper_ranker_is_kept_unless_the_held_out_lists_tell_them_apart() -> None:
    """The leaf count kept: the best held-out NDCG, or the cheapest to predict whose paired
    bootstrap interval from the best reaches 0 (a gain within noise buys no trees)."""
    from engine.rerank.training import choose_leaves

    rng = np.random.default_rng(1)
    base = rng.random(400)
    cheap, dear = _booster(15, 20), _booster(63, 20)
    noise = {15: (cheap, base), 63: (dear, base + rng.normal(0.003, 0.05, 400))}
    clear = {15: (cheap, base), 63: (dear, base + 0.05 + rng.normal(0, 0.01, 400))}
    assert noise[63][1].mean() > noise[15][1].mean()
    assert choose_leaves(noise, cheaper_within_noise=True) == 15
    assert choose_leaves(noise, cheaper_within_noise=False) == 63
    assert choose_leaves(clear, cheaper_within_noise=True) == 63
    cheap_best = {15: (cheap, base + 0.01), 63: (dear, base)}
    assert choose_leaves(cheap_best, cheaper_within_noise=True) == 15
