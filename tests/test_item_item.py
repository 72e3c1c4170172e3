"""The item-to-item models and the transition source have known answers on tiny matrices:
EASE's closed form, cosine kNN, P(next | last) from ordered histories, and pair scores that
agree with the dense scores they gather from."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from engine.candidates.itemitem import ItemItem, top_of_scores
from engine.candidates.sequence import transitions

X = sp.csr_matrix(
    np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]], np.float32)
)


def test_ease_matches_the_closed_form() -> None:
    lam = 2.0
    g = (X.T @ X).toarray().astype(np.float64) + lam * np.eye(4)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    model = ItemItem.ease(X, lam=lam, max_items=10)
    np.testing.assert_allclose(model.weights, b, atol=1e-5)
    np.testing.assert_allclose(model.scores(np.arange(5)), X.toarray() @ b, atol=1e-5)


def test_ease_covers_only_the_most_interacted_items() -> None:
    model = ItemItem.ease(X, lam=1.0, max_items=2)  # items 0 and 1 (3 users each; 2 has 3 too)
    s = model.scores(np.array([0]))
    assert np.isnan(s[0]).sum() == 2 and len(model.keep) == 2


def test_knn_is_shrunk_cosine_with_top_neighbours() -> None:
    model = ItemItem.knn(X, neighbours=1, shrink=0.0)
    w = model.weights.toarray()
    # item 0 and item 1 share 2 users, each has 3: cosine 2/3, the best neighbour of item 0
    assert w[0, 1] == pytest.approx(2 / 3)
    assert (w > 0).sum(axis=1).max() == 1 and w[0, 0] == 0.0


def test_pair_scores_gather_the_dense_scores() -> None:
    rng = np.random.default_rng(1)
    m = sp.random(50, 30, density=0.15, format="csr", random_state=2, dtype=np.float32)
    m.data[:] = 1.0
    for model in (
        ItemItem.ease(m, lam=5.0, max_items=25),
        ItemItem.knn(m, neighbours=5, shrink=1.0),
    ):
        users, items = rng.integers(0, 50, 400), rng.integers(0, 30, 400)
        blocks = model.pair_scores(users, items)  # block by block
        dense = model.scores(np.arange(50))
        np.testing.assert_allclose(blocks, dense[users, items], atol=1e-6)
        # the users of the last `scores` call are read from it, the others recomputed
        np.testing.assert_allclose(model.pair_scores(users, items), dense[users, items], atol=1e-6)
        model.scores(np.arange(10))
        np.testing.assert_allclose(model.pair_scores(users, items), dense[users, items], atol=1e-6)


def test_top_of_scores_skips_non_finite() -> None:
    s = np.array([[0.1, np.nan, 0.5, -np.inf]], np.float32)
    s[~np.isfinite(s)] = -np.inf
    np.testing.assert_array_equal(top_of_scores(s, 3), [[2, 0, -1]])


def test_transitions_estimate_what_comes_next() -> None:
    t = datetime(2026, 1, 1)
    rows = [(1, 10, 0), (1, 11, 1), (1, 12, 2), (2, 10, 0), (2, 11, 1), (3, 10, 0), (3, 13, 1)]
    pos = pl.DataFrame(
        {
            "user_idx": [r[0] for r in rows],
            "item_idx": [r[1] for r in rows],
            "ts": [t + timedelta(days=r[2]) for r in rows],
        }
    )
    table = transitions(pos.lazy(), span=1, neighbours=10).collect()
    after_10 = {b: w for a, b, w in table.iter_rows() if a == 10}
    assert after_10 == {11: pytest.approx(2 / 3), 13: pytest.approx(1 / 3)}
    assert not table.filter(pl.col("item_idx") == 12).height  # nothing followed 12
    two = transitions(pos.lazy(), span=2, neighbours=10).collect()
    after_10 = {b: w for a, b, w in two.iter_rows() if a == 10}
    # user 1 reaches 12 two steps after 10 (weight 1/2): 2 + 1 + 0.5 in all
    assert after_10[12] == pytest.approx(0.5 / 3.5)


def test_a_sparse_models_scores_stay_sparse_and_equal_the_dense_product() -> None:
    """kNN scores a block of users as CSR (a dense block would not fit at a million items):
    the same values as the dense product, zero where the model has no evidence, and the
    pairs the features read equal the dense product's."""
    rng = np.random.default_rng(5)
    hist = sp.csr_matrix((rng.random((60, 300)) < 0.03).astype(np.float32))
    model = ItemItem.knn(hist, neighbours=20, shrink=1.0)
    users = np.arange(0, 60, 3)
    dense = np.asarray((hist[users] @ model.weights).todense(), np.float32)
    got = model.sparse_scores(users)
    np.testing.assert_array_equal(got.toarray(), dense)
    assert got.nnz < dense.size / 3
    items = rng.integers(0, 300, len(users) * 40)
    pairs = np.repeat(users, 40)
    np.testing.assert_array_equal(
        model.pair_scores(pairs, items), dense[np.repeat(np.arange(len(users)), 40), items]
    )


def test_knn_source_takes_each_users_best_unseen_eligible_items() -> None:
    from types import SimpleNamespace

    from engine.candidates.collaborative import KnnSource

    rng = np.random.default_rng(6)
    hist = sp.csr_matrix((rng.random((40, 200)) < 0.05).astype(np.float32))
    eligible = rng.random(200) < 0.8
    source = KnnSource.__new__(KnnSource)
    source.ctx = SimpleNamespace(eligible=eligible, cfg=SimpleNamespace(knn=7))
    source.item_model = ItemItem.knn(hist, neighbours=15, shrink=1.0)
    users = np.arange(40)
    row, items, vals, _ = source.top(users)
    dense = np.round(np.asarray((hist @ source.item_model.weights).todense(), np.float32), 6)
    for u in users:
        ok = (dense[u] > 0) & eligible & (hist[u].toarray()[0] == 0)
        cand = np.flatnonzero(ok)
        want = cand[np.lexsort((cand, -dense[u, cand]))][:7]
        np.testing.assert_array_equal(items[row == u], want)
        np.testing.assert_allclose(vals[row == u], dense[u, want], rtol=1e-6)
        _, one, one_vals, _ = source.top(np.array([u]))  # one request's own path
        np.testing.assert_array_equal(one, want)
        np.testing.assert_array_equal(one_vals, vals[row == u])


@pytest.mark.parametrize("density", [0.05, 0.3])
@pytest.mark.parametrize("path", ["gather", "product"])
def test_one_users_sparse_scores_equal_the_sparse_product(
    density: float, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request's sparse scores, by numpy's gather or scipy's product of the user's row
    (the cut between them moves with the catalogue's size): the block product's, bit for
    bit."""
    monkeypatch.setattr(
        "engine.candidates.itemitem.GATHER_VALUES", 10**9 if path == "gather" else -1
    )
    rng = np.random.default_rng(9)
    hist = sp.csr_matrix((rng.random((50, 400)) < density).astype(np.float32))
    model = ItemItem.knn(hist, neighbours=30, shrink=2.0)
    for u in range(50):
        want = sp.csr_matrix(hist[[u]] @ model.weights, dtype=np.float32)
        want.sort_indices()
        want.eliminate_zeros()
        got = model.sparse_scores(np.array([u]))
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)
