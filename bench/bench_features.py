"""Benchmark 6, pipelines: the feature build on a generated data set (20M interactions in the
full run) with Polars, beside the same history-list build in pandas as the peer.

Each measurement runs in a fresh process, so its peak RSS is its own:

* the whole `build_features` (validation, vocabularies, encoding and split, item content,
  histories, popularity, affinity), as the nightly features stage runs it;
* the history lists alone, in Polars (`user_history` over the encoded positives, as
  `build_features` runs it) and in pandas (read, keep positives, encode ids, last time per
  user and item, sort, last 50 items per user as lists); both check the same lists.

    python bench/bench_features.py --data artifacts/bench-data [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness import Report, in_child

EVENTS = ["view", "click", "add_to_cart", "purchase"]
LENGTH = 50


def whole_build(config: Path) -> tuple[float, int]:
    from engine.config import EngineConfig
    from pipelines.config import load_config
    from pipelines.dataset import build_features

    cfg = load_config(config, EngineConfig)
    t0 = time.perf_counter()
    fs = build_features(cfg, window="all")
    return time.perf_counter() - t0, fs.interactions.height


def polars_history(path: Path) -> tuple[float, int]:
    import polars as pl

    from pipelines.features.history import user_history

    t0 = time.perf_counter()
    pos = (
        pl.scan_parquet(path)
        .filter(pl.col("event").is_in(EVENTS))
        .select(
            pl.col("user_id").rank("dense").alias("user_idx"),
            pl.col("item_id").rank("dense").alias("item_idx"),
            "ts",
        )
    )
    history = user_history(pos, length=LENGTH).collect(engine="streaming")
    return time.perf_counter() - t0, int(history["history"].list.len().sum())


def pandas_history(path: Path) -> tuple[float, int]:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path, columns=["user_id", "item_id", "ts", "event"])
    df = df[df["event"].isin(EVENTS)]
    df = pd.DataFrame(
        {
            "user_idx": pd.factorize(df["user_id"])[0],
            "item_idx": pd.factorize(df["item_id"])[0],
            "ts": df["ts"].to_numpy(),
        }
    )
    last = df.groupby(["user_idx", "item_idx"], as_index=False, sort=False)["ts"].max()
    last = last.sort_values(["user_idx", "ts", "item_idx"], kind="stable")
    tail = last.groupby("user_idx", sort=False).tail(LENGTH)
    history = tail.groupby("user_idx", sort=False).agg(
        history=("item_idx", list), history_ts=("ts", list)
    )
    return time.perf_counter() - t0, int(history["history"].map(len).sum())


def measure(
    fn: Callable[[Path], tuple[float, int]], arg: Path, repeats: int
) -> tuple[list[float], list[float], int]:
    """Seconds and peak GiB of `repeats` fresh-process runs of `fn(arg)`, and its row count."""
    secs, peaks, rows = [], [], 0
    for _ in range(repeats):
        (s, rows), peak = in_child(fn, arg)
        secs.append(s)
        peaks.append(peak / 2**30)
    return secs, peaks, rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a `recengine generate` folder")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    report = Report("features", args)
    path = args.data / "interactions.parquet"
    import polars as pl

    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    print(f"{path}: {n:,} interaction rows", flush=True)
    secs, peaks, positives = measure(whole_build, args.data / "config.toml", args.repeats)
    report.add(
        f"Polars build_features, whole ({n:,} rows, {positives:,} positives)",
        secs,
        "s",
        note="validation, vocabularies, encoding, split, content, histories, popularity, affinity",
    )
    report.add("Polars build_features, peak RSS", peaks, "GiB")
    pl_s, pl_peak, pl_rows = measure(polars_history, path, args.repeats)
    pd_s, pd_peak, pd_rows = measure(pandas_history, path, args.repeats)
    if pl_rows != pd_rows:
        raise SystemExit(f"the two history builds disagree: {pl_rows:,} vs {pd_rows:,} items")
    report.add("history lists, pandas (the peer)", pd_s, "s", note=f"{pd_rows:,} list items")
    report.add(
        "history lists, Polars",
        pl_s,
        "s",
        ratio=("faster than pandas", statistics.median(pd_s) / statistics.median(pl_s)),
    )
    report.add("history lists, pandas peak RSS", pd_peak, "GiB")
    report.add(
        "history lists, Polars peak RSS",
        pl_peak,
        "GiB",
        ratio=("of pandas' peak", float(np.median(pl_peak) / np.median(pd_peak))),
    )
    report.finish()


if __name__ == "__main__":
    main()
