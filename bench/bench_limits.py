"""Benchmark 1, the machine's limits: float32 GEMM GFLOP/s and memory bandwidth (read and
copy), measured in the same `make bench` run as everything else, so the other figures can be
given as shares of them. Also prints the machine (cores, CPU flags, memory, GPU).

    python bench/bench_limits.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os

from harness import Report, limits, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    print(json.dumps(machine()))
    report = Report("limits", args)
    lim = limits(args.repeats, args.threads)
    report.add("float32 GEMM 4096^3 (numpy)", lim["gemm_gflops"], "GFLOP/s")
    report.add(f"memory read, sum of 1 GiB ({args.threads} threads)", lim["read_gbs"], "GB/s")
    report.add(f"memory copy, 1 GiB read + write ({args.threads} threads)", lim["copy_gbs"], "GB/s")
    report.finish()


if __name__ == "__main__":
    main()
