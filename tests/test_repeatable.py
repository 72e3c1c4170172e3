"""Runs on the same data and code give the same bits: float sums that do not depend on the
order rows are added in (`pipelines.sums.exact_sum`), and two nightly runs that publish the
same lists and the same re-ranker."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import polars as pl

from engine.config import EngineConfig
from engine.jobs.nightly import run_nightly
from pipelines.sums import exact_sum


def test_exact_sums_are_the_same_in_any_row_order() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    frame = pl.DataFrame(
        {"key": rng.integers(0, 500, n), "x": rng.exponential(1.0, n) * 0.5 ** rng.random(n)}
    )
    plain, exact = set(), set()
    for seed in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        sums = shuffled.group_by("key").agg(
            pl.col("x").sum().alias("plain"), exact_sum(pl.col("x")).alias("exact")
        )
        sums = sums.sort("key")
        plain.add(sums["plain"].to_numpy().tobytes())
        exact.add(sums["exact"].to_numpy().tobytes())
    assert len(plain) > 1  # the float sums do move with the order
    assert len(exact) == 1
    direct = frame.group_by("key").agg(pl.col("x").sum()).sort("key")["x"].to_numpy()
    np.testing.assert_allclose(
        np.frombuffer(next(iter(exact))), direct, rtol=0, atol=n / 500 * 2.0**-32 * 4
    )


def test_exact_sums_keep_nan_infinities_and_nulls_as_sums_do() -> None:
    frame = pl.DataFrame(
        {
            "key": [1, 1, 2, 2, 3, 3, 4, 4, 5],
            "x": [0.5, float("nan"), 1.0, float("inf"), 0.25, None, None, None, 0.0],
        }
    )
    got = frame.group_by("key").agg(
        exact_sum(pl.col("x")).alias("exact"), pl.col("x").sum().alias("plain")
    )
    got = got.sort("key")
    np.testing.assert_array_equal(got["exact"].to_numpy(), got["plain"].to_numpy())
    # 0/0 shares (a user whose decayed weights underflow to 0) reach these sums on real data


def test_two_nightly_runs_publish_the_same_lists_and_reranker(
    published: tuple[EngineConfig, Path], tmp_path: Path
) -> None:
    cfg, first_root = published
    again = run_nightly(cfg, tmp_path / "artifacts")
    assert again.published and again.version is not None
    first = (first_root / "current").resolve()
    for kind in ("product", "ad"):
        a = pl.read_parquet(first / "recs" / f"kind={kind}" / "*.parquet").sort("user_id", "rank")
        b = pl.read_parquet(again.version / "recs" / f"kind={kind}" / "*.parquet").sort(
            "user_id", "rank"
        )
        assert a.equals(b), kind
    for name in ("model.txt", "features.json"):
        assert filecmp.cmp(first / "rerank" / name, again.version / "rerank" / name, shallow=False)
