"""Re-ranker features: computed only from the feature window (a test that fails if anything
from the label window leaks in), graded labels, and query groups of whole users."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.candidates import (
    CandidateContext,
    CandidatesConfig,
    default_sources,
    generate_candidates,
)
from engine.rerank.dataset import attach_labels, rank_data, split_users
from engine.rerank.features import GRADES, feature_frame, feature_names, labels
from pipelines.dataset import FeatureSet

CFG = CandidatesConfig(
    ann=0,
    covisit=20,
    content=10,
    trending=10,
    repeat=5,
    cold_user=10,
    ease=10,
    knn=10,
    transitions=10,
)


def context(fs: FeatureSet) -> CandidateContext:
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(fs.vocabs.item.size, 8)).astype(np.float32)
    users = rng.normal(size=(fs.vocabs.user.size, 8)).astype(np.float32)
    return CandidateContext.build(
        fs, CFG, content_vectors=vec, item_vectors=vec, user_vectors=users
    )


@pytest.fixture(scope="module")
def frame(small_features: FeatureSet) -> pl.DataFrame:
    ctx = context(small_features)
    users = small_features.users["user_idx"].to_numpy()[:120].astype(np.int64)
    return feature_frame(generate_candidates(default_sources(ctx), users), ctx)


def test_features_do_not_depend_on_the_label_window(
    small_features: FeatureSet, frame: pl.DataFrame
) -> None:
    """Change everything after the feature window (drop it, or double it): same features."""
    later = pl.col("split") != "train"
    for changed in (
        small_features.interactions.filter(~later),
        pl.concat([small_features.interactions, small_features.interactions.filter(later)]),
    ):
        fs = dataclasses.replace(small_features, interactions=changed)
        ctx = context(fs)
        users = small_features.users["user_idx"].to_numpy()[:120].astype(np.int64)
        again = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
        assert_frame_equal(again, frame)


def test_feature_frame_has_the_documented_features(frame: pl.DataFrame) -> None:
    names = feature_names(frame)
    for col in (
        "two_tower",
        "content_sim",
        "count_7d",
        "count_all",
        "days_since_last",
        "item_age_days",
        "price",
        "price_ratio",
        "category_share",
        "brand_share",
        "days_since_category",
        "user_events",
        "covisit_score",
        "trending_rank",
        "n_sources",
    ):
        assert col in names, col
    assert frame.select(pl.struct("user_idx", "item_idx").is_unique().all()).item()


def test_labels_grade_the_strongest_event(small_features: FeatureSet) -> None:
    ctx = context(small_features)
    lab = labels(ctx, "valid")
    valid = small_features.interactions.filter(pl.col("split") == "valid")
    row = valid.row(0, named=True)
    events = valid.filter(
        (pl.col("user_idx") == row["user_idx"]) & (pl.col("item_idx") == row["item_idx"])
    )["event"].to_list()
    got = lab.filter(
        (pl.col("user_idx") == row["user_idx"]) & (pl.col("item_idx") == row["item_idx"])
    )["label"].item()
    assert got == max(GRADES[e] for e in events)
    assert lab["label"].min() >= 1 and lab["label"].max() <= 4


def test_query_groups_are_whole_users_with_a_positive(
    frame: pl.DataFrame, small_features: FeatureSet
) -> None:
    lab = labels(context(small_features), "train")  # any window works for the bookkeeping
    labelled = attach_labels(frame, lab)
    assert labelled.group_by("user_idx").agg((pl.col("label") > 0).any())["label"].all()
    data = rank_data(labelled, feature_names(labelled))
    sizes = labelled.group_by("user_idx", maintain_order=True).len()["len"].to_numpy()
    np.testing.assert_array_equal(data.group, sizes)
    fit, hold = split_users(labelled, 0.25, seed=1)
    assert not set(fit["user_idx"].to_list()) & set(hold["user_idx"].to_list())
    assert fit.height + hold.height == labelled.height


def test_items_without_history_have_unknown_popularity(
    small_features: FeatureSet, frame: pl.DataFrame
) -> None:
    """An item nobody touched in the window gets missing (not zero) popularity features, so
    the ranker can tell "new" from "unpopular"; items with history keep theirs."""
    known = set(small_features.popularity["item_idx"].to_list())
    cold = ~frame["item_idx"].is_in(list(known))
    pop_cols = [
        c for c in frame.columns if c.startswith(("count_", "weight_all", "days_since_last"))
    ]
    assert cold.any() and len(pop_cols) >= 6
    assert frame.filter(cold).select(pop_cols).null_count().row(0) == (cold.sum(),) * len(pop_cols)
    assert frame.filter(~cold)["count_all"].null_count() == 0


@pytest.fixture(scope="module")
def per_user_features(small_config) -> FeatureSet:
    """The view of the re-ranker's lists at per-user cutoffs: each user's latest 20% label."""
    from functools import partial

    from pipelines.dataset import build_features
    from pipelines.split import per_user_cutoff

    return build_features(
        small_config, window="train", resplit=partial(per_user_cutoff, share=0.2, drop_test=True)
    )


def test_per_user_cutoffs_label_each_users_latest_rows(per_user_features: FeatureSet) -> None:
    inter = per_user_features.interactions
    assert set(inter["split"].unique()) == {"train", "valid"}  # the test rows are gone
    bounds = inter.group_by("user_idx", "split").agg(
        pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")
    )
    per_user = bounds.pivot(on="split", index="user_idx", values=["lo", "hi"]).drop_nulls()
    assert per_user.height > 100
    assert (per_user["lo_valid"] >= per_user["hi_train"]).all()  # labels after the history
    users_with_labels = inter.filter(pl.col("split") == "valid")["user_idx"].n_unique()
    assert users_with_labels > 0.5 * inter["user_idx"].n_unique()  # most users give a list


def test_per_user_lists_do_not_see_the_labels(per_user_features: FeatureSet) -> None:
    """Drop or double every user's label rows: the candidates and features stay the same."""
    fs0 = per_user_features
    users = (
        fs0.interactions.filter(pl.col("split") == "valid")["user_idx"]
        .unique()
        .sort()
        .to_numpy()[:120]
        .astype(np.int64)
    )
    ctx = context(fs0)
    base = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
    labels_ = pl.col("split") == "valid"
    for changed in (
        fs0.interactions.filter(~labels_),
        pl.concat([fs0.interactions, fs0.interactions.filter(labels_)]),
    ):
        fs = dataclasses.replace(fs0, interactions=changed)
        ctx = context(fs)
        again = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
        assert_frame_equal(again, base)
