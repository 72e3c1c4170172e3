"""Train / valid / test splits of the interactions.

Temporal (the default): rows before `valid_start` train, rows in [valid_start, test_start)
validate, rows from `test_start` on test, so no model ever sees the future of what it is scored
on. Leave-last-out: each user's last interaction is test and the one before it valid.
Holdout: each user's latest share of interactions is test, the latest share of the rest valid
(a user's own cutoff, for users who come back rarely and a global date would miss).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

import polars as pl

from pipelines.config import SplitConfig

SPLIT = "split"


@dataclass(frozen=True)
class Cutoffs:
    """Absolute cutoffs of a temporal split (naive UTC)."""

    valid_start: datetime
    test_start: datetime


def resolve_cutoffs(cfg: SplitConfig, last_ts: datetime) -> Cutoffs:
    """Absolute cutoffs from the config; day counts count back from the midnight that ends
    the day of the last interaction (so cutoffs fall on day boundaries)."""
    if cfg.valid_start is not None and cfg.test_start is not None:
        return Cutoffs(cfg.valid_start, cfg.test_start)
    assert cfg.valid_days is not None and cfg.test_days is not None
    end = datetime.combine(last_ts.date(), time()) + timedelta(days=1)  # midnight after the end
    test_start = end - timedelta(days=cfg.test_days)
    return Cutoffs(test_start - timedelta(days=cfg.valid_days), test_start)


def temporal_split(lf: pl.LazyFrame, cutoffs: Cutoffs, *, ts: str = "ts") -> pl.LazyFrame:
    """Add a `split` column: train < valid_start <= valid < test_start <= test."""
    return lf.with_columns(
        pl.when(pl.col(ts) < cutoffs.valid_start)
        .then(pl.lit("train"))
        .when(pl.col(ts) < cutoffs.test_start)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
        .alias(SPLIT)
    )


def leave_last_out(lf: pl.LazyFrame, *, user: str = "user_id", ts: str = "ts") -> pl.LazyFrame:
    """Add a `split` column: each user's last row is test, the one before valid (users with at
    least three rows; shorter histories stay in train). Ties in time break by row order."""
    pos = pl.int_range(pl.len()).over(user, order_by=ts, descending=True)
    n = pl.len().over(user)
    return lf.with_columns(
        pl.when((n >= 3) & (pos == 0))
        .then(pl.lit("test"))
        .when((n >= 3) & (pos == 1))
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
        .alias(SPLIT)
    )


def latest_share(
    share: float, *, user: str = "user_id", ts: str = "ts", within: str | None = None
) -> pl.Expr:
    """True on each user's latest `share` of rows (of the rows whose split is `within`, when
    given): at least one, never all of them, so the user keeps a history to be scored from.
    Ties in time break by row order."""
    rows = pl.col(ts).is_not_null() if within is None else pl.col(SPLIT) == within
    order = pl.when(rows).then(pl.col(ts))  # other splits' rows sort last
    pos = pl.int_range(pl.len()).over(user, order_by=order, descending=True, nulls_last=True)
    n = rows.cast(pl.Int64).sum().over(user)
    held = (n * share).round().cast(pl.Int64).clip(1, None)
    return rows & (n >= 2) & (pos < pl.min_horizontal(held, n - 1))


def user_holdout(
    lf: pl.LazyFrame, share: float, *, user: str = "user_id", ts: str = "ts"
) -> pl.LazyFrame:
    """Add a `split` column: each user's latest `share` of rows is test, the latest `share` of
    the remaining rows valid, the rest train (a user with one row keeps it in train)."""
    return lf.with_columns(
        pl.when(latest_share(share, user=user, ts=ts))
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias(SPLIT)
    ).with_columns(
        pl.when(latest_share(share, user=user, ts=ts, within="train"))
        .then(pl.lit("valid"))
        .otherwise(pl.col(SPLIT))
        .alias(SPLIT)
    )


def per_user_cutoff(
    lf: pl.LazyFrame,
    share: float,
    *,
    drop_test: bool,
    step: int = 0,
    user: str = "user_id",
    ts: str = "ts",
) -> pl.LazyFrame:
    """Re-split for the re-ranker's training lists at per-user cutoffs: each user's latest
    `share` of the kept rows is "valid" (the labels), the rest "train". With `drop_test` the
    configured test rows are dropped first (lists for a model scored on them must never see
    them); otherwise every row is kept (lists for the published model). `step` cuts that many
    times earlier: the labels of each later cut are dropped (they are this cut's future)."""
    if drop_test:
        lf = lf.filter(pl.col(SPLIT) != "test")
    for _ in range(step):
        lf = lf.filter(~latest_share(share, user=user, ts=ts))
    return lf.with_columns(pl.lit("train").alias(SPLIT)).with_columns(
        pl.when(latest_share(share, user=user, ts=ts, within="train"))
        .then(pl.lit("valid"))
        .otherwise(pl.col(SPLIT))
        .alias(SPLIT)
    )


def split_interactions(lf: pl.LazyFrame, cfg: SplitConfig, last_ts: datetime) -> pl.LazyFrame:
    """Apply the configured split strategy."""
    if cfg.strategy == "leave_last_out":
        return leave_last_out(lf)
    if cfg.strategy == "holdout":
        return user_holdout(lf, cfg.holdout_share)
    return temporal_split(lf, resolve_cutoffs(cfg, last_ts))
