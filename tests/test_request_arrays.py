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
