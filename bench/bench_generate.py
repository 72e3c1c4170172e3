"""Generator throughput: wall time and peak memory for a large generated set.

Prints the median (min-max) over --repeats runs, and beside it the time to read back and rewrite
the interactions file alone (the Parquet I/O floor the generator cannot beat).

    python bench/bench_generate.py --users 1000000 --items 200000 --interactions 20000000
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from pipelines.synthetic import GeneratorSpec, generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--interactions", type=int, default=20_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = GeneratorSpec(users=args.users, items=args.items, interactions=args.interactions)
    times, io_times, rows = [], [], 0
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            paths = generate(spec, Path(d))
            times.append(time.perf_counter() - t0)
            rows = paths.n_interactions
            t0 = time.perf_counter()
            pl.read_parquet(paths.interactions).write_parquet(
                Path(d) / "copy.parquet", compression="zstd"
            )
            io_times.append(time.perf_counter() - t0)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    med = statistics.median(times)
    print(f"generate users={spec.users:,} items={spec.items:,} interactions={rows:,}")
    print(
        f"  wall time      : {med:.1f} s (min {min(times):.1f}, max {max(times):.1f}) "
        f"over {len(times)} runs"
    )
    print(f"  throughput     : {rows / med / 1e6:.2f} M interaction rows/s")
    print(f"  peak RSS       : {peak_gib:.2f} GiB")
    print(
        f"  Parquet floor  : {statistics.median(io_times):.1f} s to read+rewrite the "
        f"interactions alone ({statistics.median(io_times) / med:.0%} of the generator's time)"
    )


if __name__ == "__main__":
    main()
