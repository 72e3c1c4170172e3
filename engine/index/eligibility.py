"""Which items may be returned at a given time: available, and for ads, in flight."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl


def eligible_items(
    items: pl.DataFrame, n_items: int, *, at: datetime, kind: str | None = None
) -> np.ndarray:
    """(n_items,) bool by item_idx: available items (of `kind` when given), ads only between
    their start_ts (inclusive) and end_ts (exclusive); a missing date leaves that side open.
    Row 0 (the OOV item) is never eligible."""
    ok = pl.col("available")
    if kind is not None:
        ok = ok & (pl.col("kind") == kind)
    in_flight = (pl.col("start_ts").is_null() | (pl.col("start_ts") <= at)) & (
        pl.col("end_ts").is_null() | (pl.col("end_ts") > at)
    )
    ok = ok & ((pl.col("kind") != "ad") | in_flight)
    mask = np.zeros(n_items, bool)
    # the index column alone: filtering the frame would copy every column of every item
    mask[items.select(pl.col("item_idx").filter(ok))["item_idx"].to_numpy()] = True
    mask[0] = False
    return mask
