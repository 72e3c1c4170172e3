"""Benchmark 4b, loading a served version: `Recommender.load` in a fresh process (imports
timed apart), and the memory a second process serving the same version adds: each pair of
processes loads the version one after the other, and the second's cost is the growth of the
pair's proportional set size (PSS: a page shared by both counts half in each) over the
first's RSS alone. Pages both map from the version's files (the stored request tables, the
item index read in place, the embedding tables) are counted once.

    python bench/bench_load.py --artifacts artifacts [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import Report

CHILD = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t = time.perf_counter()
from serving import Recommender
imported = time.perf_counter() - t
t = time.perf_counter()
rec = Recommender.load(sys.argv[1])
loaded = time.perf_counter() - t
rec.recommend(rec._state.users.id_of(1), k=10)
print(json.dumps({"import_s": imported, "load_s": loaded}), flush=True)
sys.stdin.readline()
"""


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss, Pss_Anon, Pss_File, Anonymous of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def start(artifacts: str) -> tuple[subprocess.Popen[str], dict[str, float]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, artifacts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise SystemExit(f"the loading process failed (exit {proc.wait()})")
    return proc, json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    report = Report("load", args)
    imports, loads, rss, anon, added, shares = [], [], [], [], [], []
    for _ in range(args.runs):
        first, timing = start(args.artifacts)
        alone = smaps(first.pid)
        second, timing2 = start(args.artifacts)
        time.sleep(0.2)
        a, b = smaps(first.pid), smaps(second.pid)
        for p in (first, second):
            p.communicate("\n")
        grown = a["Pss"] + b["Pss"] - alone["Rss"]
        imports += [timing["import_s"], timing2["import_s"]]
        loads += [timing["load_s"], timing2["load_s"]]
        rss.append(alone["Rss"] / 2**30)
        anon.append(alone["Anonymous"] / 2**30)
        added.append(grown / 2**30)
        shares.append(grown / alone["Rss"])
    report.add(
        "Recommender.load, fresh process (after its imports)",
        loads,
        "s",
        goal="<= 2 s",
        met=statistics.median(loads) <= 2,
    )
    report.add("import serving (torch, LightGBM, FAISS, Polars)", imports, "s")
    report.add("first process: RSS after load and one request", rss, "GiB")
    report.add("first process: of which private (anonymous)", anon, "GiB")
    report.add(
        "second process on the same version adds (PSS of both - RSS of the first)", added, "GiB"
    )
    report.add(
        "second process adds, share of the first's RSS",
        [s * 100 for s in shares],
        "%",
        goal="< 25%",
        met=statistics.median(shares) < 0.25,
    )
    report.finish()


if __name__ == "__main__":
    main()
