"""What every benchmark shares: repeated measurements summarised as median (min-max), the
machine they ran on, its limits, peak memory of work run in a child process, and one JSON file
per benchmark written beside the printed table (so runs can be compared by a program).

A benchmark builds a `Report`, adds figures (each with its runs, unit, and optionally the peer
or limit it is divided by and the goal it is held to), prints it and writes it:

    report = Report("retrieval", args)
    report.add("flat q/s at batch 1024", rates, "q/s", ratio=("GEMM limit", share), goal=...)
    report.finish(out_dir)
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("artifacts/bench")
PEERS = ("implicit", "pandas")  # besides the libraries a version records
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def summary(values: Sequence[float], spec: str = ",.0f") -> str:
    """'median (min-max)' of `values`, each formatted with `spec`."""
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def latencies(
    fn: Callable[[Any], object], inputs: Sequence[Any], repeats: int
) -> tuple[list[float], list[float]]:
    """p50 and p99 (ms) of `fn(x)` one call at a time over `inputs`, one entry per run
    (after 5 untimed calls)."""
    for x in inputs[:5]:
        fn(x)
    p50, p99 = [], []
    for _ in range(repeats):
        lat = []
        for x in inputs:
            t0 = time.perf_counter()
            fn(x)
            lat.append(time.perf_counter() - t0)
        p50.append(float(np.percentile(lat, 50)) * 1e3)
        p99.append(float(np.percentile(lat, 99)) * 1e3)
    return p50, p99


def machine() -> dict[str, Any]:
    """Cores, CPU model and the vector flags that decide GEMM speed, memory, GPU, versions."""
    model, flags, mem = platform.processor(), set(), 0
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(
            (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model
        )
        flags = next(
            (set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), flags
        )
        mem = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except OSError:
        pass
    import torch

    from engine.jobs.nightly import library_versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "memory_gib": round(mem / 2**30, 1),
        "gpu": gpu,
        "os": platform.platform(),
        "versions": library_versions(PEERS),
    }


def limits(repeats: int, threads: int | None = None) -> dict[str, list[float]]:
    """The machine's float32 GEMM GFLOP/s (numpy 4096^3 matmul) and memory read and copy GB/s
    (1 GiB split over `threads` threads): the ceilings other figures are shares of."""
    threads = threads or os.cpu_count() or 1
    a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    gemm = [2 * 4096**3 / s / 1e9 for s in timed(lambda m=a: m @ m, repeats)]
    del a
    x = np.ones(1 << 28, np.float32)
    y = np.zeros_like(x)  # touched, so the timed copy does not page-fault
    xs, ys = np.array_split(x, threads), np.array_split(y, threads)
    with ThreadPoolExecutor(threads) as pool:
        read = [x.nbytes / s / 1e9 for s in timed(lambda: list(pool.map(np.sum, xs)), repeats)]
        copy = [
            2 * x.nbytes / s / 1e9  # read + write
            for s in timed(lambda: list(pool.map(np.copyto, ys, xs)), repeats)
        ]
    return {"gemm_gflops": gemm, "read_gbs": read, "copy_gbs": copy}


def rss() -> int:
    """Resident bytes now, after handing freed heap memory back to the OS."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's peak resident bytes so far: VmHWM, the peak of its own memory map
    (`ru_maxrss` would carry over the parent's peak into a spawned child)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def _with_peak(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, int]:
    return fn(*args), peak_rss()


def in_child(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """`fn(*args)` in a fresh spawned process: its result and that process's peak RSS, so one
    measurement's memory is not hidden under another's high-water mark."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_with_peak, fn, args).result()


class RssSampler:
    """Samples this process's RSS every `every` seconds in a thread (peak within a window)."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.samples = every, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as fh:
                self.samples.append((time.perf_counter(), int(fh.read().split()[1]) * page))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int:
        return max((b for t, b in self.samples if start <= t <= end), default=0)


@dataclass
class Figure:
    """One measured figure: its runs (median, min, max derived), the ratio that explains it,
    and the goal it is held to."""

    name: str
    runs: list[float]
    unit: str
    ratio: float | None = None
    ratio_of: str = ""  # what the figure is divided by: "GEMM limit", "implicit ALS"
    goal: str = ""
    met: bool | None = None
    note: str = ""
    median: float = field(init=False)
    min: float = field(init=False)
    max: float = field(init=False)

    def __post_init__(self) -> None:
        self.runs = [float(v) for v in self.runs]
        self.median = statistics.median(self.runs)
        self.min, self.max = min(self.runs), max(self.runs)


def _num(v: float) -> str:
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{max(0, 2 - int(np.floor(np.log10(abs(v)))))}f}"


class Report:
    """The figures of one benchmark, printed as a table and written as JSON."""

    def __init__(self, name: str, args: object | None = None) -> None:
        self.name, self.figures = name, []  # type: ignore[var-annotated]
        self.details: dict[str, Any] = {}  # anything else the benchmark records, JSON-ready
        self.params = (
            {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            if args is not None
            else {}
        )
        self.started = time.perf_counter()
        self.date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def add(
        self,
        name: str,
        runs: float | Sequence[float],
        unit: str,
        *,
        ratio: tuple[str, float] | None = None,
        goal: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> Figure:
        values = [runs] if isinstance(runs, int | float) else list(runs)
        fig = Figure(
            name,
            values,
            unit,
            ratio=ratio[1] if ratio else None,
            ratio_of=ratio[0] if ratio else "",
            goal=goal,
            met=met,
            note=note,
        )
        self.figures.append(fig)
        line = f"  {name}: {_num(fig.median)} {unit}"
        if len(values) > 1:
            line += f" ({_num(fig.min)}-{_num(fig.max)}, {len(values)} runs)"
        if fig.ratio is not None:
            line += f"; {fig.ratio:.2f}x {fig.ratio_of}"
        if goal:
            line += f"; goal {goal}: {'met' if met else 'NOT met'}"
        print(line, flush=True)
        return fig

    def table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{self.name} ({time.perf_counter() - self.started:.0f} s)")
        for col in ("figure", "median", "min-max", "unit", "ratio", "goal"):
            t.add_column(col, justify="left" if col in ("figure", "goal") else "right")
        for f in self.figures:
            spread = f"{_num(f.min)}-{_num(f.max)}" if len(f.runs) > 1 else ""
            ratio = f"{f.ratio:.2f}x {f.ratio_of}" if f.ratio is not None else ""
            goal = f"{f.goal}: {'met' if f.met else 'NOT met'}" if f.goal else ""
            t.add_row(f.name, _num(f.median), spread, f.unit, ratio, goal)
        Console(width=160).print(t)

    def finish(self, out: Path = OUT) -> Path:
        """Print the table and write `out/<name>.json`."""
        self.table()
        path = self.write(out)
        print(f"wrote {path}")
        return path

    def write(self, out: Path = OUT) -> Path:
        """Write `out/<name>.json` with the figures so far (atomically: a rename), so a long
        benchmark keeps what it measured if it is stopped."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        doc = {
            "bench": self.name,
            "date": self.date,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "seconds": round(time.perf_counter() - self.started, 1),
            "params": self.params,
            "machine": machine(),
            "peak_rss_gib": round(peak_rss() / 2**30, 2),
            "figures": [asdict(f) for f in self.figures],
        }
        if self.details:
            doc["details"] = self.details
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(path)
        return path
