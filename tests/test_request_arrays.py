"""Array helpers of the request path against direct definitions: in-list ranks as Polars'
rank("min", descending) within each user, and CSR row gathers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.request.features import rank_desc
from engine.request.tables import Rows


@pytest.mark.parametrize("kind", ["counts", "float32", "large counts"])
def test_in_list_ranks_are_polars_min_ranks_within_each_user(kind: str) -> None:
    rng = np.random.default_rng({"counts": 0, "float32": 1, "large counts": 2}[kind])
    row = np.sort(rng.integers(0, 30, 2000))
    v = {"counts": rng.integers(0, 20, 2000).astype(float),
         "float32": rng.standard_normal(2000).astype(np.float32).astype(float),
         "large counts": rng.integers(2**25, 2**25 + 30, 2000).astype(float)}[kind]
    want = (pl.DataFrame({"row": row, "v": v})
            .select(pl.col("v").rank("min", descending=True).over("row"))["v"].to_numpy())
    np.testing.assert_array_equal(rank_desc(row, v), want.astype(float))


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
    last[1, 2:] = -1            # fewer recent items than the width
    last[4] = -1                # none: NaN features
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
