"""Run every benchmark in one go (`make bench`, or `make bench-quick` for --quick), one after
the other so none shares the cores with another, and collect their figures into one
machine-readable file beside the printed tables:

    artifacts/bench/results.json   mode, date, machine, and per benchmark: its command, exit
                                   status, seconds and every figure (runs, median, min, max,
                                   unit, ratio, goal, met)
    artifacts/bench/<name>.json    each benchmark's own report
    artifacts/bench/<name>.log     what it printed

The full run works on the 1M users x 200k items x 20M interactions generated set and takes
hours on a 2-core machine; --quick runs the same benchmarks on small sets (100k users x 20k
items x 2M interactions; the nightly curve at 5k and 10k users over 10k items) in under 10
minutes, plus the list quality on real data (`bench_real_quality.py`: the full run on the
grocery, toys and sports sets of ../shared/datasets, --quick on toys only; skipped when the
folder is absent).

    python bench/run.py [--quick] [--only limits,retrieval,...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import OUT, machine

BENCH = Path(__file__).parent
PY = sys.executable
RECENGINE = str(Path(sys.executable).with_name("recengine"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
Command = list[str] | Callable[[], None]


@dataclass(frozen=True)
class Sizes:
    """What one mode runs on."""

    data: Path  # the generated set of benchmarks 3, 5, 6
    users: int
    items: int
    interactions: int
    index_args: list[str]  # benchmark 2
    recommend_users: int  # benchmark 3: users timed (retrieval and ALS)
    full_path_users: int
    train_examples: int  # benchmark 5
    nightly_users: list[int]  # benchmark 7
    nightly_items: int
    nightly_out: Path
    online: Path  # benchmark 4: the artifacts root served
    online_calls: int = 300
    http_seconds: int = 30  # the HTTP load test's duration
    builds_online: bool = True  # the quick run serves its nightly step's artifact
    repeats: int = 3
    real_quality: tuple[str, ...] = ("--datasets", "grocery,toys,sports")  # real data sets


FULL = Sizes(
    data=Path("artifacts/bench-data"),
    users=1_000_000,
    items=200_000,
    interactions=20_000_000,
    index_args=["--n", "1000000", "--dim", "64"],
    recommend_users=200_000,
    full_path_users=5000,
    train_examples=300_000,
    nightly_users=[250_000, 500_000, 1_000_000],
    nightly_items=200_000,
    nightly_out=Path("artifacts/bench-nightly"),
    online=Path("artifacts/bench-1m/artifacts"),
)

QUICK = Sizes(
    data=Path("artifacts/bench-quick"),
    users=100_000,
    items=20_000,
    interactions=2_000_000,
    index_args=[
        "--n",
        "200000",
        "--dim",
        "64",
        "--no-filters",
        "--tune-queries",
        "300",
        "--held-out",
        "300",
        "--single",
        "100",
        "--batches",
        "1",
    ],
    recommend_users=20_000,
    full_path_users=500,
    train_examples=50_000,
    nightly_users=[5_000, 10_000],
    nightly_items=10_000,
    nightly_out=Path("artifacts/bench-nightly-quick"),
    online=Path("artifacts/bench-nightly-quick/10000/artifacts"),
    online_calls=100,
    http_seconds=10,
    builds_online=False,
    real_quality=("--quick",),
)


def generated(data: Path, users: int, items: int, interactions: int) -> Command:
    """Set-up that generates the set benchmarks 3, 5 and 6 read, when it is absent."""

    def make() -> None:
        if not (data / "config.toml").is_file():
            run_checked(
                [
                    RECENGINE,
                    "generate",
                    "--out",
                    str(data),
                    "--users",
                    str(users),
                    "--items",
                    str(items),
                    "--interactions",
                    str(interactions),
                ]
            )

    return make


def online_artifact(root: Path) -> Command:
    """Set-up that builds the full run's 1M-item artifact of benchmark 4 (BENCHMARKS.md)
    when it is absent at the time the benchmark starts."""

    def build() -> None:
        if (root / "current").exists():
            return
        data = root.parent / "data"
        config = data / "bench.toml"
        run_checked(
            [
                RECENGINE,
                "generate",
                "--out",
                str(data),
                "--users",
                "20000",
                "--items",
                "1000000",
                "--interactions",
                "1000000",
                "--seed",
                "11",
            ]
        )
        text = re.sub(r"(?m)^ground_truth.*\n", "", (data / "config.toml").read_text())
        config.write_text(text + "\n" + (BENCH / "serving_1m.toml").read_text())
        run_checked([RECENGINE, "nightly", "--config", str(config), "--artifacts", str(root)])

    return build


def run_checked(cmd: list[str]) -> None:
    print(f"  set-up: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True)


def plan(s: Sizes) -> list[tuple[str, list[Command]]]:
    """(benchmark, its commands: set-up first, the benchmark last) in run order."""
    r = ["--repeats", str(s.repeats)]
    largest = s.nightly_out / str(max(s.nightly_users))
    data = generated(s.data, s.users, s.items, s.interactions)
    return [
        ("limits", [[PY, str(BENCH / "bench_limits.py"), "--repeats", "5"]]),
        ("retrieval", [[PY, str(BENCH / "bench_index.py"), *s.index_args, *r]]),
        ("features", [data, [PY, str(BENCH / "bench_features.py"), "--data", str(s.data), *r]]),
        (
            "training_1proc",
            [
                data,
                [
                    PY,
                    str(BENCH / "bench_train_throughput.py"),
                    "--data",
                    str(s.data),
                    "--examples",
                    str(s.train_examples),
                    *r,
                ],
            ],
        ),
        (
            "training_2proc",
            [
                data,
                [
                    TORCHRUN,
                    "--nproc_per_node",
                    "2",
                    str(BENCH / "bench_train_throughput.py"),
                    "--data",
                    str(s.data),
                    "--examples",
                    str(s.train_examples),
                    *r,
                ],
            ],
        ),
        (
            "nightly",
            [
                [
                    PY,
                    str(BENCH / "bench_nightly.py"),
                    "--users",
                    ",".join(map(str, s.nightly_users)),
                    "--items",
                    str(s.nightly_items),
                    "--out",
                    str(s.nightly_out),
                ]
            ],
        ),
        (
            "recommend_all",
            [
                data,
                [
                    PY,
                    str(BENCH / "bench_recommend_all.py"),
                    "--data",
                    str(s.data),
                    "--users",
                    str(s.recommend_users),
                    "--config",
                    str(largest / "data" / "bench.toml"),
                    "--artifacts",
                    str(largest / "artifacts"),
                    "--full-users",
                    str(s.full_path_users),
                    *r,
                ],
            ],
        ),
        (
            "early_exit",
            [
                [
                    PY,
                    str(BENCH / "bench_early_exit.py"),
                    "--version",
                    str(largest / "artifacts" / "current"),
                    "--users",
                    str(s.full_path_users),
                    *r,
                ]
            ],
        ),
        (
            "online",
            [
                *([online_artifact(s.online)] if s.builds_online else []),
                [
                    PY,
                    str(BENCH / "bench_serving.py"),
                    "--artifacts",
                    str(s.online),
                    "--calls",
                    str(s.online_calls),
                    *r,
                ],
            ],
        ),
        ("load", [[PY, str(BENCH / "bench_load.py"), "--artifacts", str(s.online)]]),
        (
            "http",
            [
                *([online_artifact(s.online)] if s.builds_online else []),
                [
                    PY,
                    str(BENCH / "bench_http.py"),
                    "--artifacts",
                    str(s.online),
                    "--config",  # a second version is built with it where none is stored
                    str(s.online.parent / "data" / "bench.toml"),
                    "--seconds",
                    str(s.http_seconds),
                ],
            ],
        ),
        ("real_quality", [[PY, str(BENCH / "bench_real_quality.py"), *s.real_quality]]),
    ]


QUALITY = [  # full mode only: quality, not speed (each prints its own tables)
    (
        "two_tower_quality",
        [[PY, str(BENCH / "bench_two_tower_quality.py"), "--config", "data_samples/config.toml"]],
    ),
    (
        "candidate_recall",
        [[PY, str(BENCH / "bench_candidate_recall.py"), "--config", "data_samples/config.toml"]],
    ),
    (
        "rerank_quality",
        [[PY, str(BENCH / "bench_rerank_quality.py"), "--config", "data_samples/config.toml"]],
    ),
    ("pctr", [[PY, str(BENCH / "bench_pctr.py"), "--config", "data_samples/config.toml"]]),
    (
        "evaluation",
        [
            [
                RECENGINE,
                "evaluate",
                "--config",
                "data_samples/config.toml",
                "--out",
                "artifacts/reports/evaluation",
            ]
        ],
    ),
    ("oracle_ceiling", [[PY, str(BENCH / "bench_oracle_ceiling.py"), "--data", "data_samples"]]),
    ("generator", [[PY, str(BENCH / "bench_generate.py")]]),
    ("explain", [[PY, str(BENCH / "bench_explain.py")]]),
    (
        "evaluation_bursty",
        [
            [
                RECENGINE,
                "generate",
                "--spec",
                "data_samples/generator_bursty.toml",
                "--out",
                "artifacts/bench-bursty",
            ],
            [
                RECENGINE,
                "evaluate",
                "--config",
                "artifacts/bench-bursty/config.toml",
                "--out",
                "artifacts/reports/evaluation-bursty",
            ],
        ],
    ),
]


def run(name: str, commands: list[Command], out: Path) -> dict[str, object]:
    """Run `commands` in order (a callable is a set-up step run here), teeing their output
    into out/<name>.log; stop at the first failure."""
    log = out / f"{name}.log"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(
            [str(BENCH), str(Path.cwd()), os.environ.get("PYTHONPATH", "")]
        )
    }
    t0, code = time.perf_counter(), 0
    print(f"\n=== {name}: {' '.join(commands[-1][1:])}", flush=True)  # type: ignore[index]
    with log.open("w") as fh:
        for cmd in commands:
            if callable(cmd):
                try:
                    cmd()
                except (OSError, subprocess.CalledProcessError) as exc:
                    print(f"set-up failed: {exc}", flush=True)
                    code = 1
                    break
                continue
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                fh.write(line)
            code = proc.wait()
            if code:
                break
    report = out / f"{name}.json"
    figures = json.loads(report.read_text()) if report.is_file() and not code else None
    return {
        "command": commands[-1],
        "returncode": code,
        "seconds": round(time.perf_counter() - t0, 1),
        "report": figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sets, under 10 minutes")
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    steps = plan(sizes) + ([] if args.quick else QUALITY)
    if args.only:
        wanted = set(args.only.split(","))
        if unknown := wanted - {n for n, _ in steps}:
            ap.error(
                f"unknown benchmarks {sorted(unknown)}; known: " + ", ".join(n for n, _ in steps)
            )
        steps = [(n, c) for n, c in steps if n in wanted]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, _ in steps:  # a stale report must not pass for this run's
        (OUT / f"{name}.json").unlink(missing_ok=True)
    started = time.perf_counter()
    doc: dict[str, object] = {
        "mode": "quick" if args.quick else "full",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": {},
    }
    results: dict[str, dict[str, object]] = doc["benchmarks"]  # type: ignore[assignment]
    for name, commands in steps:
        results[name] = run(name, commands, OUT)
        doc["seconds"] = round(time.perf_counter() - started, 1)
        tmp = OUT / "results.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(OUT / "results.json")
    summary(results, time.perf_counter() - started)
    if any(r["returncode"] for r in results.values()):
        sys.exit(1)


def summary(results: dict[str, dict[str, object]], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"all benchmarks: {seconds / 60:.1f} min ({OUT / 'results.json'})")
    for col in ("benchmark", "seconds", "figure", "median", "ratio", "goal"):
        t.add_column(col)
    for name, r in results.items():
        if r["returncode"]:
            t.add_row(name, str(r["seconds"]), f"FAILED (exit {r['returncode']})", "", "", "")
            continue
        report = r["report"] or {"figures": []}
        figures = report["figures"]  # type: ignore[index]
        shown = [f for f in figures if f["goal"] or f["ratio"] is not None] or figures
        for i, f in enumerate(
            shown
            or [{"name": "(see the log)", "median": "", "unit": "", "ratio": None, "goal": ""}]
        ):
            ratio = f"{f['ratio']:.2f}x {f['ratio_of']}" if f["ratio"] is not None else ""
            goal = f"{f['goal']}: {'met' if f['met'] else 'NOT met'}" if f["goal"] else ""
            median = f"{f['median']:,.4g} {f['unit']}" if f["median"] != "" else ""
            t.add_row(
                name if i == 0 else "",
                str(r["seconds"]) if i == 0 else "",
                f["name"],
                median,
                ratio,
                goal,
            )
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
