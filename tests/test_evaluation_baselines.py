"""Baselines and beyond-accuracy figures on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from engine.evaluation.baselines import (
    Interactions,
    als,
    ease,
    item_knn,
    popularity,
    top_items,
    top_of_scores,
)
from engine.evaluation.beyond import beyond_accuracy, intra_list_diversity, popularity_percentile


def blocks(n_users: int = 40, n_items: int = 12, seed: int = 0) -> Interactions:
    """Two taste groups: users 0..19 like items 0..5, users 20..39 items 6..11."""
    rng = np.random.default_rng(seed)
    u, i = [], []
    for user in range(n_users):
        lo = 0 if user < n_users // 2 else n_items // 2
        for item in rng.choice(np.arange(lo, lo + n_items // 2), 4, replace=False):
            u.append(user)
            i.append(int(item))
    return Interactions.build(np.array(u), np.array(i), n_users, n_items)


def test_interactions_are_binary_even_with_repeats() -> None:
    x = Interactions.build(np.array([0, 0, 1]), np.array([2, 2, 1]), 2, 3)
    assert x.matrix.toarray().tolist() == [[0, 0, 1], [0, 1, 0]]


def test_ease_matches_the_closed_form() -> None:
    x = blocks()
    lam = 5.0
    dense = x.matrix.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + lam * np.eye(dense.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    rows = np.arange(5)
    np.testing.assert_allclose(
        ease(x, lam, max_items=100)(rows), dense[rows] @ b, rtol=1e-4, atol=1e-5
    )


def test_ease_scores_only_its_items() -> None:
    x = Interactions.build(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]), 3, 4)
    s = ease(x, 1.0, max_items=2)(np.arange(3))
    assert np.isneginf(s[:, 3]).all() and np.isneginf(s[:, 2]).all()  # item 3 unseen, 2 cut
    assert np.isfinite(s[:, :2]).all()


def test_item_knn_cosine_on_a_hand_case() -> None:
    # users: 0 -> {0, 1}, 1 -> {0, 1}, 2 -> {1, 2}
    x = Interactions.build(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 1, 2]), 3, 3)
    s = item_knn(x, neighbours=10, shrink=0.0)(np.array([2]))
    # cos(0, 1) = 2 / sqrt(2 * 3), cos(1, 2) = 1 / sqrt(3 * 1), cos(0, 2) = 0
    assert s[0].tolist() == pytest.approx([2 / np.sqrt(6), 1 / np.sqrt(3), 1 / np.sqrt(3)])


def test_popularity_counts_users() -> None:
    x = Interactions.build(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 1]), 3, 3)
    assert popularity(x)(np.array([0, 1]))[0].tolist() == [1, 3, 0]


def test_top_items_never_lists_seen_or_ineligible_items() -> None:
    x = blocks()
    seen = x.matrix
    allowed = np.ones(12, bool)
    allowed[[1, 7]] = False
    top = top_items(ease(x, 10.0, 100), np.arange(40), seen, allowed, 5)
    for user, row in enumerate(top):
        listed = set(row[row >= 0].tolist())
        assert not listed & set(seen[user].indices.tolist())
        assert not listed & {1, 7}
    # a user's own taste group comes first: the two remaining items of the group
    assert set(top[0, :2].tolist()) <= set(range(6))


def test_als_learns_the_taste_groups() -> None:
    x = blocks(seed=1)
    top = top_items(
        als(x, factors=2, regularization=1.0, iterations=20, alpha=5.0, seed=0),
        np.arange(40),
        x.matrix,
        np.ones(12, bool),
        2,
    )
    own = [(row < 6).all() if user < 20 else (row >= 6).all() for user, row in enumerate(top)]
    assert np.mean(own) > 0.9


def test_top_of_scores_orders_and_pads() -> None:
    s = np.array([[0.1, 0.5, -np.inf, 0.5]], np.float32)
    assert top_of_scores(s, 5).tolist() == [[1, 3, 0, -1, -1]]


def test_beyond_accuracy_hand_case() -> None:
    counts = np.array([0, 10, 5, 1, 0])  # item 0 is the OOV row
    category = np.array([-1, 7, 7, 8, 8])
    eligible = np.array([False, True, True, True, True])
    top = np.array([[1, 2], [1, 3]])
    out = beyond_accuracy(top, counts=counts, category=category, eligible=eligible, n_users=19)
    assert out["coverage"] == pytest.approx(3 / 4)
    info = -np.log2((counts + 1) / 20)
    assert out["novelty"] == pytest.approx(info[[1, 2, 1, 3]].mean())
    assert out["diversity"] == pytest.approx(0.5)  # same category, then different
    pct = popularity_percentile(counts, eligible)
    assert pct[1] == 1.0 and pct[4] == 0.0
    assert out["popularity_percentile"] == pytest.approx(pct[[1, 2, 1, 3]].mean())


def test_diversity_of_a_list_of_all_different_categories_is_one() -> None:
    assert intra_list_diversity(np.array([[0, 1, 2, -1]]), np.array([5, 6, 7])) == 1.0


def test_sparse_seen_rows_are_respected_for_users_without_history() -> None:
    x = blocks()
    empty = sp.csr_matrix((40, 12), dtype=np.float32)
    top = top_items(popularity(x), np.arange(3), empty, np.ones(12, bool), 12)
    assert sorted(top[0].tolist()) == list(range(12))
