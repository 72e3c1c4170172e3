"""From labelled candidate frames to the ranker's query groups.

A query is one user's candidate list as of one cutoff (`cutoff`, `user_idx`); its rows are
contiguous and sorted. Lists with no positive teach a ranker nothing and are dropped; users are
split into fit and early-stopping sets whole (all their cutoffs), never row by row.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.rerank.features import KEYS
from engine.rerank.ranker import RankData, feature_matrix

QUERY = ["cutoff", "user_idx"]


def attach_labels(
    frame: pl.DataFrame, labels: pl.DataFrame, *, drop_without_positive: bool = True
) -> pl.DataFrame:
    """`frame` with a `label` column (0 where the user did nothing with the item) and a
    `cutoff` column (0 unless there), sorted by query then item."""
    if "cutoff" not in frame.columns:
        frame = frame.with_columns(pl.lit(0, pl.Int32).alias("cutoff"))
    out = (
        frame.join(labels, on=KEYS, how="left")
        .with_columns(pl.col("label").fill_null(0))
        .sort(*QUERY, "item_idx")
    )
    if drop_without_positive:
        out = out.filter((pl.col("label") > 0).any().over(QUERY))
    return out


def rank_data(frame: pl.DataFrame, names: list[str]) -> RankData:
    """Features (nulls as NaN, which LightGBM treats as missing), labels and group sizes of a
    labelled frame sorted by query."""
    x = feature_matrix(frame, names)
    group = frame.group_by(QUERY, maintain_order=True).len()["len"].to_numpy()
    return RankData(x, frame["label"].to_numpy().astype(np.float64), group)


def split_users(frame: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, holdout) frames with a random `share` of the users in holdout (at least one
    user when there are two or more, so that a small shop still gets an early stop)."""
    users = frame["user_idx"].unique().sort().to_numpy()
    rng = np.random.default_rng(seed)
    n = int(len(users) * share)
    n = max(n, 1) if share > 0 and len(users) >= 2 else n
    held = pl.DataFrame({"user_idx": rng.choice(users, n, replace=False)})
    return (
        frame.join(held, on="user_idx", how="anti"),
        frame.join(held, on="user_idx", how="semi"),
    )


def sample_negatives(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """Every positive row of each query and at most `n` of its negatives (chosen by a seeded
    hash, so the same inputs keep the same rows); `n` = 0 keeps every row."""
    if n <= 0 or frame.is_empty():
        return frame
    order = pl.struct(*QUERY, "item_idx").hash(seed)
    keep = (pl.col("label") > 0) | (
        order.rank("ordinal").over([*QUERY, (pl.col("label") > 0).alias("_positive")]) <= n
    )
    return frame.filter(keep)
