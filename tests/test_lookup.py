"""Lookup tables: a request reads its own rows, the same rows a join would give."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.lookup import ByKey


def test_by_key_gives_the_rows_a_semi_join_gives() -> None:
    rng = np.random.default_rng(0)
    frame = pl.DataFrame(
        {
            "item_idx": rng.integers(0, 50, 400),
            "neighbour": rng.integers(0, 50, 400),
            "w": rng.random(400),
        }
    )
    table = ByKey(frame, "item_idx")
    keys = np.array([7, 3, 7, 49, 1000, -1])  # repeated and absent keys
    got = table.rows(keys)
    want = frame.join(pl.DataFrame({"item_idx": np.unique(keys)}), on="item_idx", how="semi")
    assert got.schema == frame.schema
    assert got.sort(pl.all()).equals(want.sort(pl.all()))
    assert (
        ByKey(frame.rename({"item_idx": "user_idx"})).rows(np.array([3])).height
        == frame.filter(pl.col("item_idx") == 3).height
    )
    assert table.rows(np.empty(0, np.int64)).height == 0
