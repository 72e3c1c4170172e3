"""Lookup tables of the candidate sources and the re-ranker's features, built once per candidate
context, so that a request reads only its own rows: item tables are dense by item index (a
gather), tables of many rows per key are sorted by the key (a binary search). A join against a whole table would cost what the table
costs, for every online request."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.encode import INDEX_DTYPE


class ByKey:
    """A frame's rows grouped by an integer `key` column (`user_idx` unless told), found for
    any set of keys by binary search."""

    def __init__(self, frame: pl.DataFrame, key: str = "user_idx") -> None:
        self.frame = frame.sort(key)
        self.keys = self.frame[key].to_numpy()

    def rows(self, keys: np.ndarray) -> pl.DataFrame:
        """Every row of the given keys (each key once, whatever `keys` repeats)."""
        keys = np.unique(np.asarray(keys, np.int64))
        lo = np.searchsorted(self.keys, keys, "left")
        n = np.searchsorted(self.keys, keys, "right") - lo
        total = int(n.sum())
        idx = np.arange(total) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
        return self.frame[idx]


def dense_by_item(frame: pl.DataFrame, n_items: int) -> pl.DataFrame:
    """`frame` (keyed by item_idx) as one row per index 0..n_items-1 (nulls where absent),
    without the key: row i describes item i."""
    full = pl.DataFrame({"item_idx": pl.int_range(n_items, dtype=INDEX_DTYPE, eager=True)})
    return full.join(
        frame,
        on="item_idx",
        how="left",
        maintain_order="left",
    ).drop("item_idx")


def gather_items(table: pl.DataFrame, items: np.ndarray) -> pl.DataFrame:
    """The rows of a `dense_by_item` table for `items`, in that order."""
    return table[np.asarray(items, np.int64)]
