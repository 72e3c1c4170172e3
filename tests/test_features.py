"""Features: histories in time order, content tokens, popularity windows, affinities."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipelines.dataset import FeatureSet
from pipelines.features import (
    category_prefixes,
    item_popularity,
    positives,
    price_edges,
    text_tokens,
    user_category_affinity,
    user_history,
)
from pipelines.features.content import price_bucket

T0 = datetime(2024, 1, 1)


def rows(spec: list[tuple[int, int, int, str]]) -> pl.LazyFrame:
    """(user_idx, item_idx, hours after T0, event) rows."""
    return pl.LazyFrame(
        {
            "user_idx": [r[0] for r in spec],
            "item_idx": [r[1] for r in spec],
            "ts": [T0 + timedelta(hours=r[2]) for r in spec],
            "event": [r[3] for r in spec],
        },
        schema_overrides={"user_idx": pl.Int32, "item_idx": pl.Int32},
    )


WEIGHTS = {"impression": 0.0, "view": 1.0, "purchase": 4.0}


def test_positives_drop_zero_weight_events_and_attach_weights() -> None:
    out = (
        rows([(1, 1, 0, "impression"), (1, 2, 1, "view"), (1, 3, 2, "purchase")])
        .pipe(positives, WEIGHTS)
        .collect()
    )
    assert out["item_idx"].to_list() == [2, 3]
    assert out["weight"].to_list() == [1.0, 4.0]


def test_history_is_oldest_first_last_n_and_distinct() -> None:
    lf = rows(
        [
            (1, 5, 3, "view"),
            (1, 7, 1, "view"),
            (1, 9, 2, "view"),
            (1, 7, 4, "purchase"),
            (1, 8, 0, "view"),
            (2, 1, 0, "view"),
        ]
    ).pipe(positives, WEIGHTS)
    out = user_history(lf, length=3).collect().sort("user_idx")
    # user 1 in time order: 8, 7, 9, 5, 7 -> distinct by last time: 8, 9, 5, 7 -> last 3
    assert out["history"].to_list() == [[9, 5, 7], [1]]
    ts = out["history_ts"][0].to_list()
    assert ts == sorted(ts)


def test_category_prefixes() -> None:
    s = pl.DataFrame({"c": ["a>b>c", "a > b", None, "x>y>z>w"]}).select(
        category_prefixes(pl.col("c"), 3)
    )
    assert s["c"].to_list() == [["a", "a>b", "a>b>c"], ["a", "a>b"], [], ["x", "x>y", "x>y>z"]]


def test_text_tokens_lowercase_words_and_tags() -> None:
    df = pl.DataFrame({"t": ["Red Shoe, size-42", None], "g": [["Sport"], None]})
    out = df.select(text_tokens(pl.col("t"), pl.col("g")))
    assert out["t"].to_list() == [["red", "shoe", "size", "42", "tag:sport"], []]


def test_price_buckets_split_by_quantiles_and_missing_is_zero() -> None:
    prices = pl.Series([float(p) for p in range(1, 101)])
    edges = price_edges(prices, 4)
    assert len(edges) == 3
    b = pl.DataFrame({"p": [1.0, 30.0, 60.0, 100.0, None]}).select(
        price_bucket(pl.col("p"), edges).alias("p")
    )
    assert b["p"].to_list() == [1, 2, 3, 4, 0]


def test_popularity_windows_count_only_before_as_of() -> None:
    lf = rows(
        [
            (1, 1, 0, "view"),
            (2, 1, 24 * 5, "view"),
            (3, 1, 24 * 9 + 12, "view"),
            (3, 1, 24 * 11, "view"),
            (1, 2, 0, "purchase"),
        ]
    ).pipe(positives, WEIGHTS)
    at = T0 + timedelta(days=10)
    out = item_popularity(lf, at=at, windows_days=[1, 7]).collect()
    one = out.filter(pl.col("item_idx") == 1).row(0, named=True)
    assert (one["count_all"], one["count_1d"], one["count_7d"]) == (3, 1, 2)
    assert one["days_since_last"] == pytest.approx(0.5)
    assert out.filter(pl.col("item_idx") == 2)["weight_all"].item() == 4.0


def test_affinity_decays_with_age_and_shares_sum_to_one() -> None:
    lf = rows([(1, 1, 0, "view"), (1, 2, 24 * 30 - 1, "view"), (1, 2, 24 * 30, "view")]).pipe(
        positives, WEIGHTS
    )  # the last row is at `at`: not counted
    cats = pl.LazyFrame(
        {"item_idx": [1, 2], "top_category": [10, 20]}, schema_overrides={"item_idx": pl.Int32}
    )
    out = user_category_affinity(lf, cats, at=T0 + timedelta(days=30), half_life_days=30).collect()
    aff = dict(zip(out["top_category"], out["affinity"], strict=True))
    assert aff[10] == pytest.approx(0.5) and aff[20] == pytest.approx(1.0, rel=1e-3)
    assert out["share"].sum() == pytest.approx(1.0)


def test_feature_set_uses_only_the_training_window(small_features: FeatureSet) -> None:
    fs = small_features
    train = fs.interactions.filter(pl.col("split") == "train")
    assert fs.as_of == fs.valid_start
    # every history item of a user was a training positive of that user
    pairs = (
        fs.history.explode("history").rename({"history": "item_idx"}).select("user_idx", "item_idx")
    )
    assert (
        pairs.join(
            train.select("user_idx", "item_idx").unique(), on=["user_idx", "item_idx"], how="anti"
        ).height
        == 0
    )
    assert fs.popularity["count_all"].sum() == train.height
    assert set(fs.items["item_idx"].to_list()) == set(range(1, fs.vocabs.item.size))


def test_feature_set_round_trips(small_features: FeatureSet, tmp_path: Path) -> None:
    back = FeatureSet.load(small_features.save(tmp_path))
    for name in FeatureSet.FRAMES:
        assert getattr(back, name).equals(getattr(small_features, name)), name
    assert (back.as_of, back.valid_start, back.window) == (
        small_features.as_of,
        small_features.valid_start,
        "train",
    )
    assert back.vocabs.item.values.equals(small_features.vocabs.item.values)
