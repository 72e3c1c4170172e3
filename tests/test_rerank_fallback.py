"""A re-ranker trained on too few lists, or one that ranks its held-out users no better than
one of its signals alone, is not published: the lists take the best signal's order and the
job says why. The order round-trips through the version folder and scores lists as the
booster would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.config import EngineConfig
from engine.rerank.config import RerankConfig
from engine.rerank.fallback import SourceOrder, best_order, order_ndcgs
from engine.rerank.lists import with_explanations
from engine.rerank.ranker import load_ranker, save_ranker, score_frame
from engine.rerank.training import fit_ranker
from pipelines.config import PipelineConfig


def lists_frame(users: int, seed: int = 0) -> pl.DataFrame:
    """Lists of 20 candidates, one positive each: EASE ranks it first, the two-tower score
    is noise, item-kNN puts it in the middle."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        pos = int(rng.integers(20))
        for i in range(20):
            rows.append(
                {
                    "cutoff": 0,
                    "user_idx": u,
                    "item_idx": i,
                    "label": int(i == pos),
                    "two_tower": float(rng.normal()),
                    "ease_score": 1.0 if i == pos else float(rng.uniform(0, 0.9)),
                    "knn_score": 0.5 if i == pos else float(rng.uniform(0, 1)),
                    "noise": float(rng.normal()),
                }
            )
    return pl.DataFrame(rows)


def config(small_config: PipelineConfig, **rerank: object) -> EngineConfig:
    return EngineConfig(
        **small_config.model_dump(exclude={"rerank"}),
        rerank=RerankConfig(
            **({"min_data_in_leaf": 5, "num_boost_round": 20, "early_stopping_rounds": 5} | rerank)
        ),
    )


def test_orders_are_scored_and_the_best_is_taken() -> None:
    ndcgs = order_ndcgs(lists_frame(50), 10)
    assert set(ndcgs) == {"two_tower", "ease_score", "knn_score"}
    assert ndcgs["ease_score"] == pytest.approx(1.0)
    assert ndcgs["two_tower"] < 0.6
    assert best_order(ndcgs) == "ease_score"
    assert best_order({}) == "two_tower"


def test_too_few_lists_publish_the_best_signal(small_config: PipelineConfig) -> None:
    fitted = fit_ranker(lists_frame(40), config(small_config, min_lists=100))
    assert isinstance(fitted.ranker, SourceOrder) and fitted.ranker.column == "ease_score"
    assert fitted.lists == 40 and fitted.trees == 0
    assert "40 training lists" in (fitted.fallback or "") and "min_lists = 100" in fitted.fallback
    assert fitted.holdout_ndcg == pytest.approx(1.0) and fitted.names == ["ease_score"]


def test_no_lists_at_all_fall_back_to_the_two_tower(small_config: PipelineConfig) -> None:
    fitted = fit_ranker(lists_frame(1).clear(), config(small_config))
    assert isinstance(fitted.ranker, SourceOrder) and fitted.ranker.column == "two_tower"
    assert fitted.lists == 0


def test_a_ranker_that_loses_to_a_signal_is_not_published(small_config: PipelineConfig) -> None:
    """Leaves that can't split (min_data_in_leaf above the rows) score every row alike: the
    fit ranks worse than EASE on its held-out users."""
    cfg = config(small_config, min_lists=10, min_data_in_leaf=100_000)
    fitted = fit_ranker(lists_frame(200), cfg)
    assert isinstance(fitted.ranker, SourceOrder) and fitted.ranker.column == "ease_score"
    assert "not above the ease_score order" in (fitted.fallback or "")


def test_a_ranker_that_wins_is_published(small_config: PipelineConfig) -> None:
    """The positive is where EASE is high and item-kNN is exactly 0.5: only both together
    find it, which the booster learns and no single order does."""
    rng = np.random.default_rng(1)
    frame = lists_frame(400)
    frame = frame.with_columns(
        ease_score=pl.when(pl.col("label") > 0)
        .then(0.8)
        .otherwise(pl.Series(rng.uniform(0, 1, frame.height)))
    )
    fitted = fit_ranker(frame, config(small_config, min_lists=10))
    assert fitted.fallback is None and fitted.trees > 0
    assert fitted.holdout_ndcg > max(fitted.orders.values())


def test_an_order_round_trips_and_scores_lists(tmp_path: Path) -> None:
    order = SourceOrder("knn_score", "because")
    back = load_ranker(save_ranker(order, tmp_path))
    assert back == order and back.feature_name() == ["knn_score"]
    frame = pl.DataFrame(
        {"user_idx": [1, 1, 1], "item_idx": [4, 5, 6], "knn_score": [0.2, None, 0.7]}
    )
    np.testing.assert_array_equal(
        score_frame(back, frame, back.feature_name()), [0.2, -np.inf, 0.7]
    )
    lists = pl.DataFrame(
        {
            "user_idx": [1],
            "rank": [1],
            "item_idx": [6],
            "score": [0.7],
            "sources": ["knn"],
            "rules": [""],
        }
    )
    why = with_explanations(lists, frame, back, back.feature_name())["why"].to_list()
    assert why == ["sources: knn; order: knn_score"]


def test_nightly_publishes_the_order_says_why_and_serves_it(
    small_data: Path, tmp_path: Path
) -> None:
    """End to end: a shop with too few lists for `min_lists` gets a version whose lists follow
    the best signal, a manifest and `why` that say so, and an online API that agrees."""
    from engine.jobs.artifacts import current_version, read_manifest
    from engine.jobs.nightly import run_nightly
    from pipelines.config import load_config
    from serving import Recommender
    from tests.conftest import small_job

    path = small_job(small_data, tmp_path / "data")
    path.write_text(
        path.read_text().replace("min_lists = 50", "min_lists = 1000000")
        + "\n[evaluation]\nenabled = false\n"
    )
    cfg = load_config(path, EngineConfig)
    run_nightly(cfg, tmp_path / "artifacts")
    live = current_version(tmp_path / "artifacts")
    assert live is not None
    rr = read_manifest(live)["metrics"]["rerank"]
    assert rr["trees"] == 0 and rr["order"] in {
        "two_tower",
        "ease_score",
        "knn_score",
        "next_score",
    }
    assert "min_lists = 1000000" in rr["fallback"]
    assert rr[f"holdout_{rr['order']}_order_ndcg"] == max(
        v for k, v in rr.items() if k.endswith("_order_ndcg")
    )
    assert (live / "rerank" / "order.json").is_file()
    assert not (live / "rerank" / "model.txt").exists()
    batch = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    assert batch["why"].str.contains(f"order: {rr['order']}").all()
    rec = Recommender.load(tmp_path / "artifacts")
    for u in batch["user_id"].unique().sort().head(10).to_list():
        want = batch.filter(pl.col("user_id") == u).sort("rank")
        got = rec.recommend(u, k=cfg.jobs.k)
        assert [g["item_id"] for g in got] == want["item_id"].to_list()
