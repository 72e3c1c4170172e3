"""Splits: temporal boundaries are exact; leave-last-out takes each user's last rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from pipelines.config import SplitConfig
from pipelines.split import (
    Cutoffs,
    leave_last_out,
    resolve_cutoffs,
    split_interactions,
    temporal_split,
)

V, T = datetime(2024, 3, 1), datetime(2024, 3, 8)


def frame(times: list[datetime], users: list[str] | None = None) -> pl.LazyFrame:
    return pl.LazyFrame({"user_id": users or ["u"] * len(times), "ts": times})


def test_temporal_boundaries_are_half_open() -> None:
    eps = timedelta(microseconds=1)
    times = [V - eps, V, T - eps, T, T + timedelta(days=30)]
    out = temporal_split(frame(times), Cutoffs(V, T)).collect()
    assert out["split"].to_list() == ["train", "valid", "valid", "test", "test"]


def test_day_counts_end_at_the_midnight_after_the_last_interaction() -> None:
    cfg = SplitConfig(valid_days=7, test_days=3)
    cut = resolve_cutoffs(cfg, datetime(2024, 5, 10, 17, 30))
    assert cut.test_start == datetime(2024, 5, 8)
    assert cut.valid_start == datetime(2024, 5, 1)


def test_absolute_cutoffs_win() -> None:
    cfg = SplitConfig(valid_start=V, test_start=T)
    assert resolve_cutoffs(cfg, datetime(2030, 1, 1)) == Cutoffs(V, T)


def test_no_train_row_is_after_any_valid_or_test_row(small_features) -> None:
    inter = small_features.interactions
    train_max = inter.filter(pl.col("split") == "train")["ts"].max()
    valid = inter.filter(pl.col("split") == "valid")["ts"]
    test_min = inter.filter(pl.col("split") == "test")["ts"].min()
    assert train_max < small_features.valid_start <= valid.min()
    assert valid.max() < small_features.test_start <= test_min


def test_leave_last_out_takes_the_last_two_rows_per_user() -> None:
    d = [datetime(2024, 1, k) for k in (4, 1, 3, 2, 1, 2)]
    out = leave_last_out(frame(d, list("aaaabb"))).collect()
    assert out["split"].to_list() == ["test", "train", "valid", "train", "train", "train"]


def test_strategy_is_chosen_by_config() -> None:
    d = [datetime(2024, 1, k) for k in (1, 2, 3)]
    out = split_interactions(frame(d), SplitConfig(strategy="leave_last_out"), d[-1]).collect()
    assert out["split"].to_list() == ["train", "valid", "test"]


def test_holdout_takes_each_users_latest_share() -> None:
    """10 rows: the latest 2 test, the latest 2 of the other 8 valid; 3 rows: 1 and 1; a
    user with one row keeps it in train; ties in time never split a user's order."""
    from pipelines.split import user_holdout

    df = pl.DataFrame(
        {"user_id": ["a"] * 10 + ["b"] * 3 + ["c"], "ts": [*list(range(10)), 30, 10, 20, 5]}
    )
    got = user_holdout(df.lazy(), 0.2).collect().sort("user_id", "ts")
    by_user = {
        u: g.sort("ts")["split"].to_list()
        for (u,), g in got.group_by("user_id", maintain_order=True)
    }
    assert by_user["a"] == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    assert by_user["b"] == ["train", "valid", "test"]
    assert by_user["c"] == ["train"]


def test_per_user_cutoff_drops_test_rows_and_labels_the_latest() -> None:
    from pipelines.split import SPLIT, per_user_cutoff

    df = pl.DataFrame(
        {"user_id": ["a"] * 6, "ts": list(range(6)), SPLIT: ["train"] * 4 + ["valid", "test"]}
    )
    kept = per_user_cutoff(df.lazy(), 0.2, drop_test=True).collect().sort("ts")
    assert kept[SPLIT].to_list() == ["train"] * 4 + ["valid"]  # 5 rows: 1 labels
    every = per_user_cutoff(df.lazy(), 0.4, drop_test=False).collect().sort("ts")
    assert every[SPLIT].to_list() == ["train"] * 4 + ["valid"] * 2


def test_per_user_cutoff_steps_back_before_the_later_labels() -> None:
    """Cut one step back: the latest share is gone (the later cut's labels are this cut's
    future) and the latest share of what is left labels; a user left with one row has none."""
    from pipelines.split import SPLIT, per_user_cutoff

    df = pl.DataFrame(
        {"user_id": ["a"] * 10 + ["b"] * 2, "ts": [*list(range(10)), 0, 1], SPLIT: ["train"] * 12}
    )
    got = per_user_cutoff(df.lazy(), 0.2, drop_test=False, step=1).collect()
    a = got.filter(pl.col("user_id") == "a").sort("ts")
    assert a["ts"].to_list() == list(range(8))  # 8 and 9 labelled step 0
    assert a[SPLIT].to_list() == ["train"] * 6 + ["valid"] * 2  # round(0.2 * 8) = 2
    assert got.filter(pl.col("user_id") == "b")[SPLIT].to_list() == ["train"]
