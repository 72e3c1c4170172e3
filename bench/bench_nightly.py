"""Benchmark 7, the whole nightly job on generated sets of growing size: seconds and peak RSS
of every stage, at each number of users (items fixed, interactions per user fixed), so the
curve shows how time and memory grow with users.

Each size gets its own generated set (`recengine generate`, kept for reruns) and artifacts
root; the job runs in a fresh process with `--extra` appended to the generated config (the
settings of a nightly build at this scale: see bench/nightly.toml). Stage windows come from
the job's own stage reports; RSS is sampled every 0.2 s.

    python bench/bench_nightly.py --users 250000,500000,1000000 --items 200000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import Report, RssSampler, in_child


def nightly(config: Path, root: Path) -> dict[str, object]:
    """Run the job once in this (child) process: stage seconds, peak RSS per stage window."""
    import logging
    import warnings

    from engine.config import EngineConfig
    from engine.jobs.nightly import run_nightly
    from engine.jobs.stages import STAGES
    from pipelines.config import load_config

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(config, EngineConfig)
    marks: list[tuple[str, float]] = []
    names = {name for name, _ in STAGES} | {"publish"}

    def report(message: str) -> None:
        if message in names:
            marks.append((message, time.perf_counter()))
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    t0 = time.perf_counter()
    with RssSampler() as rss:
        result = run_nightly(cfg, root, force=True, report=report)
    end = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [end]
    peaks = {name: rss.peak(start, stop) for (name, start), stop in zip(marks, ends, strict=True)}
    return {
        "status": result.reason,
        "seconds": dict(result.seconds),
        "total": end - t0,
        "peaks": peaks,
    }


def dataset(out: Path, users: int, items: int, per_user: int, seed: int) -> Path:
    """The generated set for `users` (made once, kept for reruns)."""
    data = out / "data"
    if not (data / "config.toml").is_file():
        subprocess.run(
            [
                str(Path(sys.executable).with_name("recengine")),
                "generate",
                "--out",
                str(data),
                "--users",
                str(users),
                "--items",
                str(items),
                "--interactions",
                str(users * per_user),
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return data


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", default="250000,500000,1000000")
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--per-user", type=int, default=20, help="interaction rows per user")
    ap.add_argument("--extra", type=Path, default=Path(__file__).with_name("nightly.toml"))
    ap.add_argument("--out", type=Path, default=Path("artifacts/bench-nightly"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    report = Report("nightly", args)
    for users in (int(u) for u in args.users.split(",")):
        folder = args.out / str(users)
        data = dataset(folder, users, args.items, args.per_user, args.seed)
        config = data / "bench.toml"
        config.write_text((data / "config.toml").read_text() + "\n" + args.extra.read_text())
        root = folder / "artifacts"
        shutil.rmtree(root, ignore_errors=True)
        print(
            f"{users:,} users x {args.items:,} items x {users * args.per_user:,} "
            f"interactions: nightly job",
            flush=True,
        )
        out, peak = in_child(nightly, config, root)
        if out["status"] != "published":
            raise SystemExit(f"{users:,} users: the job did not publish ({out['status']})")
        tag = f"{users // 1000}k users"
        report.add(
            f"{tag}: whole job",
            out["total"] / 60,
            "min",
            goal="<= 60 min",
            met=out["total"] <= 3600,
        )
        report.add(f"{tag}: peak RSS", peak / 2**30, "GiB")
        for name, secs in out["seconds"].items():
            report.add(
                f"{tag}: {name}",
                secs,
                "s",
                note=f"peak RSS {out['peaks'].get(name, 0) / 2**30:.1f} GiB",
            )
        if lists := out["seconds"].get("recs"):
            report.add(f"{tag}: recs stage (product and ad lists) rate", users / lists, "users/s")
        report.write()
    report.finish()


if __name__ == "__main__":
    main()
