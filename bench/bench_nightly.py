"""Benchmark 7, the whole nightly job on generated sets of growing size: seconds and peak RSS
of every stage, at each number of users (items fixed, interactions per user fixed), so the
curve shows how time and memory grow with users.

Each size gets its own generated set (`recengine generate`, kept for reruns) and artifacts
root; the job runs in a fresh process with `--extra` appended to the generated config (the
settings of a nightly build at this scale: see bench/nightly.toml). Stage windows come from
the job's own stage reports; RSS is sampled every 0.2 s.

`--nproc 1,2` runs the job once per count on the same data and code, each alone on the
machine: one process as above, then N ranks under torchrun (`recengine nightly --nproc N`),
whose RSS is sampled per rank every 0.5 s (with each rank's own high-water mark) and whose
stage windows come from the stage start times the run recorded; the speed-up is the
one-process time over the N-rank time.

    python bench/bench_nightly.py --users 250000,500000,1000000 --items 200000
    python bench/bench_nightly.py --users 250000,1000000 --nproc 1,2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import Report, RssSampler, in_child

from engine.jobs.ranks import rank_pids
from engine.jobs.stages import STAGES


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


def _status_kib(pid: int, field: str) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def nightly_ranks(config: Path, root: Path, nproc: int) -> dict[str, object]:
    """Run the job as `nproc` ranks (`recengine nightly --nproc`): stage seconds, each rank's
    peak RSS, and each rank's peak within each stage's window."""
    cmd = [str(Path(sys.executable).with_name("recengine")), "nightly", "--config", str(config)]
    cmd += ["--artifacts", str(root), "--force", "--nproc", str(nproc)]
    samples: list[tuple[float, int, int]] = []  # (epoch seconds, rank, RSS bytes)
    high: dict[int, int] = {}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        for rank, pid in rank_pids(proc.pid).items():
            try:
                samples.append((time.time(), rank, _status_kib(pid, "VmRSS") << 10))
                high[rank] = max(high.get(rank, 0), _status_kib(pid, "VmHWM") << 10)
            except OSError:
                continue
        time.sleep(0.5)
    total = time.time() - t0
    err = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise SystemExit(f"the {nproc}-rank job failed:\n{err[-4000:]}")
    version = (root / "current").resolve()
    manifest = json.loads((version / "manifest.json").read_text())
    starts = sorted((p.stat().st_mtime, p.stem) for p in (version / "stages").glob("*.started"))
    ends = [t for t, _ in starts[1:]] + [t0 + total]
    peaks = {
        name: {
            r: max((b for t, rr, b in samples if rr == r and start <= t <= end), default=0)
            for r in high
        }
        for (start, name), end in zip(starts, ends, strict=True)
    }
    return {
        "status": "published",
        "seconds": manifest["seconds"],
        "total": total,
        "high": high,
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
    ap.add_argument("--nproc", default="1", help="rank counts to run the job with, e.g. 1,2")
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
        totals: dict[int, float] = {}
        for nproc in (int(n) for n in args.nproc.split(",")):
            shutil.rmtree(root, ignore_errors=True)
            tag = f"{users // 1000}k users" + (f", {nproc} ranks" if nproc > 1 else "")
            if nproc == 1:
                out, peak = in_child(nightly, config, root)
                if out["status"] != "published":
                    raise SystemExit(f"{users:,} users: the job did not publish ({out['status']})")
                stage_peak = {n: f"peak RSS {b / 2**30:.1f} GiB" for n, b in out["peaks"].items()}
                report.add(f"{tag}: peak RSS", peak / 2**30, "GiB")
            else:
                out = nightly_ranks(config, root, nproc)
                stage_peak = {
                    n: "peak RSS by rank "
                    + ", ".join(f"{b / 2**30:.1f}" for _, b in sorted(by.items()))
                    + " GiB"
                    for n, by in out["peaks"].items()
                }
                for rank, b in sorted(out["high"].items()):
                    report.add(f"{tag}: rank {rank} peak RSS", b / 2**30, "GiB")
            totals[nproc] = out["total"]
            report.add(
                f"{tag}: whole job",
                out["total"] / 60,
                "min",
                ratio=("1 process", totals[1] / out["total"])
                if 1 in totals and nproc > 1
                else None,
                goal="<= 60 min",
                met=out["total"] <= 3600,
            )
            for name in [n for n, _ in STAGES if n in out["seconds"]]:
                secs = out["seconds"][name]
                report.add(f"{tag}: {name}", secs, "s", note=stage_peak.get(name, ""))
            if lists := out["seconds"].get("recs"):
                report.add(
                    f"{tag}: recs stage (product and ad lists) rate", users / lists, "users/s"
                )
            report.write()
    report.finish()


if __name__ == "__main__":
    main()
