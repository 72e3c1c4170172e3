"""Ranking and beyond-accuracy metrics: hand-computed cases and agreement with ranx."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from engine.evaluation.metrics import Truth, ranking_metrics


def truth_of(rows: list[tuple[int, int, int]]) -> Truth:
    return Truth.from_frame(
        pl.DataFrame(rows, schema=["user_idx", "item_idx", "label"], orient="row")
    )


def test_hand_computed_case() -> None:
    # user 1: relevant {10 (grade 1), 20 (grade 2), 30 (grade 1)}; list 20, 5, 10, 7
    # user 2: relevant {8}; list 1, 2, 3, 4 (no hit)
    truth = truth_of([(1, 10, 1), (1, 20, 2), (1, 30, 1), (2, 8, 1)])
    top = np.array([[20, 5, 10, 7], [1, 2, 3, 4]])
    m = ranking_metrics(top, truth, [2, 4])
    assert m["recall@2"].tolist() == pytest.approx([1 / 3, 0])
    assert m["recall@4"].tolist() == pytest.approx([2 / 3, 0])
    assert m["precision@4"].tolist() == pytest.approx([0.5, 0])
    assert m["hit_rate@2"].tolist() == [1.0, 0.0]
    assert m["mrr@4"].tolist() == pytest.approx([1.0, 0])
    # AP@4: hits at ranks 1 and 3 -> (1/1 + 2/3) / 3 relevant
    assert m["map@4"][0] == pytest.approx((1 + 2 / 3) / 3)
    # NDCG@4: gains 2^2-1=3 at rank 1, 2^1-1=1 at rank 3; ideal 3, 1, 1
    dcg = 3 / math.log2(2) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"][0] == pytest.approx(dcg / idcg)
    assert m["ndcg@4"][1] == 0.0


def test_short_lists_and_padding_count_as_misses() -> None:
    truth = truth_of([(1, 3, 1), (1, 4, 1)])
    top = np.array([[-1, 3]])  # padding never matches, even an item 0 or -1 in the truth
    m = ranking_metrics(top, truth, [1, 2, 5])
    assert m["hit_rate@1"][0] == 0.0
    assert m["mrr@5"][0] == pytest.approx(0.5)
    assert m["recall@5"][0] == pytest.approx(0.5)
    assert m["precision@5"][0] == pytest.approx(0.2)


def test_subset_and_item_restriction() -> None:
    truth = truth_of([(1, 10, 1), (1, 20, 2), (2, 8, 1), (3, 9, 3)])
    part = truth.subset(np.array([0, 2]))
    assert part.users.tolist() == [1, 3] and part.items.tolist() == [10, 20, 9]
    keep = np.zeros(30, bool)
    keep[[20, 8]] = True
    cold = truth.only_items(keep)
    assert cold.users.tolist() == [1, 2] and cold.items.tolist() == [20, 8]
    assert cold.offsets.tolist() == [0, 1, 2]


def test_agrees_with_ranx_on_random_runs() -> None:
    import ranx  # a dev dependency: this check must never be skipped

    rng = np.random.default_rng(0)
    n_users, n_items, k = 200, 60, 20
    rows, top = [], np.full((n_users, k), -1)
    for u in range(n_users):
        n_rel = rng.integers(1, 12)
        for i in rng.choice(n_items, n_rel, replace=False):
            rows.append((u, int(i), int(rng.integers(1, 5))))
        length = int(rng.integers(1, k + 1))
        top[u, :length] = rng.choice(n_items, length, replace=False)
    truth = truth_of(rows)
    qrels_dict: dict[str, dict[str, int]] = {}
    for u, i, g in rows:
        qrels_dict.setdefault(f"u{u:04d}", {})[f"i{i}"] = g
    qrels = ranx.Qrels(qrels_dict)
    run = ranx.Run(
        {
            f"u{u:04d}": {f"i{i}": float(k - r) for r, i in enumerate(top[u]) if i >= 0}
            for u in range(n_users)
        }
    )
    ours = ranking_metrics(top, truth, [5, 10, 20])
    names = {
        "ndcg": "ndcg_burges",
        "map": "map",
        "mrr": "mrr",
        "recall": "recall",
        "precision": "precision",
        "hit_rate": "hit_rate",
    }
    for k_ in (5, 10, 20):
        for mine, theirs in names.items():
            want = ranx.evaluate(qrels, run, f"{theirs}@{k_}", return_mean=False)
            got = ours[f"{mine}@{k_}"]
            assert np.abs(np.asarray(want) - got).max() < 1e-9, f"{mine}@{k_}"
