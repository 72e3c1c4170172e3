"""KeyedJaggedTensor batches: the keys, shapes and contents the two-tower model consumes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.batches import (
    ITEM_KEYS,
    USER_KEYS,
    ItemTable,
    TrainingExamples,
    gather_ranges,
    inference_batches,
    training_examples,
)
from pipelines.dataset import FeatureSet

N_HIST = 4


@pytest.fixture(scope="module")
def examples(small_features: FeatureSet) -> TrainingExamples:
    return training_examples(small_features, history_length=N_HIST)


def test_training_batch_keys_and_shapes(examples: TrainingExamples) -> None:
    b = next(examples.batches(32, shuffle=True, seed=1))
    assert b.user.keys() == list(USER_KEYS) and b.item.keys() == list(ITEM_KEYS)
    assert b.user.stride() == b.item.stride() == 32
    assert b.item_idx.shape == b.item_logq.shape == b.weight.shape == (32,)
    for kjt, key in (
        (b.user, "user_id"),
        (b.item, "item_id"),
        (b.item, "item_brand"),
        (b.item, "item_price"),
    ):
        assert kjt[key].lengths().tolist() == [1] * 32
    assert int(b.user["user_history"].lengths().max()) <= N_HIST
    assert b.item["item_id"].values().tolist() == b.item_idx.tolist()


def test_batches_cover_every_example_once(examples: TrainingExamples) -> None:
    seen = np.concatenate([b.item_idx.numpy() for b in examples.batches(100, seed=2)])
    assert len(seen) == len(examples)
    assert sorted(seen.tolist()) == sorted(examples.item_idx.tolist())


def test_history_holds_only_earlier_items_of_the_same_user(examples: TrainingExamples) -> None:
    b = next(examples.batches(len(examples), shuffle=False))
    hist = b.user["user_history"].to_dense()
    users = examples.user_idx
    for k in range(0, len(examples), max(1, len(examples) // 300)):
        same_user = np.flatnonzero(users == users[k])
        earlier = examples.item_idx[same_user[same_user < k]]  # examples are in time order
        assert hist[k].tolist() == earlier[-N_HIST:].tolist()


def test_funnel_events_on_one_item_make_one_example(
    small_features: FeatureSet, examples: TrainingExamples
) -> None:
    same_user = examples.user_idx[1:] == examples.user_idx[:-1]
    assert not np.any(same_user & (examples.item_idx[1:] == examples.item_idx[:-1]))
    train = small_features.interactions.filter(pl.col("split") == "train")
    assert len(examples) < train.height
    assert examples.weight.max() == 4.0  # a purchase keeps its weight


def test_item_features_match_the_item_table(small_features: FeatureSet) -> None:
    table = ItemTable.from_features(small_features)
    items = small_features.items.sample(20, seed=0)
    kjt = table.kjt(items["item_idx"].to_numpy())
    cats = kjt["item_category"].to_dense()
    titles = kjt["item_title"].to_dense()
    for k, row in enumerate(items.iter_rows(named=True)):
        assert cats[k].tolist() == row["category_tok"]
        assert titles[k].tolist() == row["title_tok"]
    assert kjt["item_brand"].values().tolist() == items["brand_idx"].to_list()
    assert kjt["item_price"].values().tolist() == items["price_bucket"].to_list()


def test_inference_batches_use_the_latest_history(
    small_features: FeatureSet, examples: TrainingExamples
) -> None:
    users = small_features.history["user_idx"].to_numpy()[:50]
    got = [(ids, kjt) for ids, kjt in inference_batches(examples.users, users, 16)]
    assert [len(ids) for ids, _ in got] == [16, 16, 16, 2]
    hist = {
        r["user_idx"]: r["history"][-N_HIST:] for r in small_features.history.iter_rows(named=True)
    }
    for ids, kjt in got:
        dense = kjt["user_history"].to_dense()
        for k, u in enumerate(ids):
            assert dense[k].tolist() == hist[u]


def test_log_q_is_the_log_frequency(examples: TrainingExamples) -> None:
    present = np.unique(examples.item_idx)
    assert np.exp(examples.item_logq[present]).sum() == pytest.approx(1.0)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10)), max_size=20))
def test_gather_ranges_matches_slicing(spans: list[tuple[int, int]]) -> None:
    values = np.arange(100, 141)
    starts = np.array([s for s, _ in spans], np.int64)
    ends = np.array([s + n for s, n in spans], np.int64)
    got, lengths = gather_ranges(values, starts, ends)
    want = [v for s, e in zip(starts, ends, strict=True) for v in values[s:e]]
    assert got.tolist() == want
    assert lengths.tolist() == [n for _, n in spans]
