"""Array helpers of the request path against direct definitions: in-list ranks as Polars'
rank("min", descending) within each user, and CSR row gathers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine import kernels
from engine.request.features import rank_desc
from engine.request.tables import Rows


@pytest.mark.parametrize("kind", ["counts", "float32", "large counts", "with NaN"])
def test_in_list_ranks_are_polars_min_ranks_within_each_user(kind: str) -> None:
    rng = np.random.default_rng({"counts": 0, "float32": 1, "large counts": 2, "with NaN": 3}[kind])
    row = np.sort(rng.integers(0, 30, 2000))
    v = {
        "counts": rng.integers(0, 20, 2000).astype(float),
        "float32": rng.standard_normal(2000).astype(np.float32).astype(float),
        "large counts": rng.integers(2**25, 2**25 + 30, 2000).astype(float),
        "with NaN": np.where(rng.random(2000) < 0.2, np.nan, rng.integers(0, 9, 2000)),
    }[kind]
    want = (
        pl.DataFrame({"row": row, "v": v})
        .select(pl.col("v").rank("min", descending=True).over("row"))["v"]
        .to_numpy()
    )
    np.testing.assert_array_equal(rank_desc(row, v), want.astype(float))
    one = row == row[0]  # one user's rows: the other sort
    np.testing.assert_array_equal(
        rank_desc(row[one], v[one]),
        (
            pl.DataFrame({"v": v[one]})
            .select(pl.col("v").rank("min", descending=True))["v"]
            .to_numpy()
            .astype(float)
        ),
    )


def test_rows_gather_every_row_of_each_key_in_turn() -> None:
    frame = pl.DataFrame({"k": [3, 1, 3, 0, 3], "v": [10, 20, 30, 40, 50]})
    rows = Rows.build(frame, "k", 5, ["v"])
    pos, owner = rows.gather(np.array([3, 2, 1, 3, 9, -1]))
    assert rows.cols["v"][pos].tolist() == [10, 30, 50, 20, 10, 30, 50]
    assert owner.tolist() == [0, 0, 0, 2, 3, 3, 3]


def test_id_arrays_map_ids_as_the_vocabulary_does() -> None:
    """`IdIndex` (what a served version looks request ids up in) against the vocabulary's
    own encoding and a dict: unicode, different lengths, an extended (unsorted) vocabulary,
    and ids it does not hold, longer ones and prefixes included."""
    from engine.request.ids import IdIndex
    from pipelines.encode import Vocabulary

    vocab = Vocabulary.fit("item", pl.Series(["b", "a-10", "ä€", "a", "a-1", "zz" * 9]))
    vocab = vocab.extend(pl.Series(["0", "b2", "x"]))
    ids = IdIndex.build(vocab)
    want = {v: i for i, v in enumerate(vocab.values.to_list(), 1)}
    asked = [*want, "", "a-", "b22", "zz" * 10, "ä", "\0", "q"]
    assert [ids.get(v) for v in asked] == [want.get(v) for v in asked]
    assert vocab.encode_series(pl.Series(asked)).to_list() == [ids.get(v) or 0 for v in asked]
    assert len(ids) == len(want) and "b2" in ids and "b3" not in ids and 5 not in ids
    assert ids.known(["x", "nope", "a"]) == [want["x"], want["a"]]
    assert ids.ids() == vocab.values.to_list()
    assert [ids.id_of(i) for i in want.values()] == list(want)
    with pytest.raises(KeyError):
        ids.id_of(0)


def test_recent_similarity_is_the_direct_cosine_in_any_row_order() -> None:
    """The recent-item similarity features against their definition (max and weighted mean
    of the cosines to the user's recent items, in float64), bit for bit the same whatever
    order the rows come in: the online arrays and the batch frames order a user's rows
    differently and must give the same features."""
    from engine.rerank.similarity import recent_similarity

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    last = rng.integers(0, 500, (6, 4))
    last[1, 2:] = -1  # fewer recent items than the width
    last[4] = -1  # none: NaN features
    weight = np.where(last >= 0, 1.0 / (1 + np.arange(4)), 0.0).astype(np.float32)
    row = np.sort(rng.integers(0, 6, 400))
    items = rng.integers(1, 500, 400)
    best, mean = recent_similarity(row, items, last, weight, vectors)
    for r in range(400):
        has = last[row[r]] >= 0
        if not has.any():
            assert np.isnan(best[r]) and np.isnan(mean[r])
            continue
        cos = vectors[last[row[r]][has]].astype(np.float64) @ vectors[items[r]]
        w = weight[row[r]][has]
        assert abs(best[r] - cos.max()) < 1e-6
        assert abs(mean[r] - (w * cos).sum() / w.sum()) < 1e-6
    shuffle = rng.permutation(400)
    best2, mean2 = recent_similarity(row[shuffle], items[shuffle], last, weight, vectors)
    np.testing.assert_array_equal(best2, best[shuffle])
    np.testing.assert_array_equal(mean2, mean[shuffle])


def test_best_rows_are_each_users_lexsort_order_cut_at_n() -> None:
    """`kernels.best` (the candidate sources' finish) against its direct definition: eligible
    and unseen rows, ordered by (user, score descending, item), the first `n` of each user;
    rows in any order, ties, NaN scores and items outside the catalogue included."""
    rng = np.random.default_rng(11)
    for trial in range(200):
        size = int(rng.integers(0, 400))
        row = rng.integers(0, 5, size)
        if trial % 3:
            row = np.sort(row)
        item = rng.integers(-2, 60, size)
        score = rng.integers(0, 6, size).astype(float)
        score[rng.random(size) < (0.1 if trial % 5 == 0 else 0)] = np.nan
        eligible = rng.random(60) < 0.8
        seen = np.unique(rng.integers(0, 5 * 60, 30))
        n, drop_seen = int(rng.integers(1, 50)), bool(trial % 2)
        got = kernels.best(row, item, score, eligible, seen, n, drop_seen)
        ok = (item >= 0) & (item < 60)
        ok[ok] = eligible[item[ok]]
        if drop_seen:
            ok &= ~np.isin(row * 60 + item, seen)
        r, i, s = row[ok], item[ok], score[ok]
        order = np.lexsort((i, -s, r))
        r, i, s = r[order], i[order], s[order]
        cut = np.arange(len(r)) - np.searchsorted(r, r, "left") < n
        np.testing.assert_array_equal(got[0], r[cut])
        np.testing.assert_array_equal(got[1], i[cut])
        np.testing.assert_array_equal(got[2], s[cut])


def test_grouped_sums_add_in_input_order_as_bincount() -> None:
    rng = np.random.default_rng(12)
    keys = rng.integers(0, 50, 5000)
    values = rng.standard_normal(5000) * 10.0 ** rng.integers(-8, 8, 5000)
    uniq, inv = np.unique(keys, return_inverse=True)
    got_keys, sums = kernels.group(keys, values, False)
    np.testing.assert_array_equal(got_keys, uniq)
    np.testing.assert_array_equal(sums, np.bincount(inv, weights=values))  # bit for bit
    most = np.full(len(uniq), -np.inf)
    np.maximum.at(most, inv, values)
    np.testing.assert_array_equal(kernels.group(keys, values, True)[1], most)


def test_merge_gives_each_source_its_first_row_and_its_rank_per_user() -> None:
    # source 0: user 0 items 5, 3, 5 (repeated: the first row stays); user 1 item 3
    # source 1: user 0 item 3
    row = np.array([0, 0, 0, 1, 0])
    item = np.array([5, 3, 5, 3, 3])
    score = np.array([9.0, 8.0, 7.0, 6.0, 1.0])
    source = np.array([0, 0, 0, 0, 1])
    keys, scores, ranks = kernels.merge(row, item, score, source, 2, 10)
    assert keys.tolist() == [3, 5, 13]
    np.testing.assert_array_equal(scores, [[8.0, 9.0, 6.0], [1.0, np.nan, np.nan]])
    np.testing.assert_array_equal(ranks, [[2.0, 1.0, 1.0], [1.0, np.nan, np.nan]])


def test_pair_and_key_searches_find_only_present_keys() -> None:
    pairs = np.array([0 * 10 + 2, 0 * 10 + 7, 3 * 10 + 1, 3 * 10 + 9])
    users = np.array([0, 0, 0, 3, 3, 2, 3])
    keys = np.array([2, 3, -1, 9, 10, 2, 1])
    assert kernels.find_pairs(pairs, 10, users, keys).tolist() == [0, -1, -1, 3, -1, -1, 2]
    assert kernels.find(pairs, np.array([7, 8, 39, 0])).tolist() == [1, -1, 3, -1]


def test_run_bounds_are_the_runs_of_equal_values() -> None:
    starts, ends = kernels.run_bounds(np.array([4, 4, 1, 7, 7, 7]))
    assert starts.tolist() == [0, 2, 3] and ends.tolist() == [2, 3, 6]
    assert [len(b) for b in kernels.run_bounds(np.empty(0, np.int64))] == [0, 0]
    assert kernels.run_places(np.array([4, 4, 1, 7, 7, 7])).tolist() == [0, 1, 0, 0, 1, 2]


def test_found_values_and_the_missing_fill() -> None:
    at = np.array([2, -1, 0])
    assert kernels.take_found(np.array([5.0, 6.0, 7.0]), at, np.nan).tolist()[::2] == [7.0, 5.0]
    assert np.isnan(kernels.take_found(np.array([5.0, 6.0, 7.0]), at, np.nan)[1])
    assert kernels.take_found(np.empty(0, np.float32), at, 0.0).tolist() == [0.0, 0.0, 0.0]
