"""The benchmark suite's bookkeeping: what `make bench` writes must say what was measured (each
figure's runs, median, min-max, ratio and goal) and the runner must refuse a benchmark it does
not know rather than run nothing. The figures themselves live in BENCHMARKS.md, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from harness import Report, in_child, summary  # noqa: E402


def test_report_json_holds_every_run_and_the_goal(tmp_path: Path, capsys) -> None:
    report = Report("unit")
    report.add("search", [30.0, 10.0, 20.0], "q/s", ratio=("numpy", 2.5),
               goal=">= 2x numpy", met=True)
    report.add("build", 4.0, "s")
    doc = json.loads(report.finish(tmp_path).read_text())
    search, build = doc["figures"]
    assert (search["median"], search["min"], search["max"]) == (20.0, 10.0, 30.0)
    assert search["runs"] == [30.0, 10.0, 20.0]
    assert (search["ratio"], search["ratio_of"], search["met"]) == (2.5, "numpy", True)
    assert build["runs"] == [4.0] and build["goal"] == ""
    assert doc["machine"]["cores"] >= 1 and "numpy" in doc["machine"]["versions"]
    assert not list(tmp_path.glob("*.tmp"))  # written by a rename, nothing half-written
    out = capsys.readouterr().out
    assert "goal >= 2x numpy: met" in out and "20.0 q/s (10.0-30.0, 3 runs)" in out


def test_summary_is_median_with_range() -> None:
    assert summary([3.0, 1.0, 2.0], ".1f") == "2.0 (1.0-3.0)"


def _grow(n: int) -> int:
    return len(b"\x01" * n)  # written, so the pages are resident


def test_in_child_reports_the_child_peak_not_ours() -> None:
    small_result, small = in_child(_grow, 1)
    big_result, big = in_child(_grow, 400 << 20)
    assert (small_result, big_result) == (1, 400 << 20)
    assert big - small > 300 << 20


def test_runner_refuses_unknown_benchmark() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--only", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown benchmarks ['nope']" in proc.stderr and "retrieval" in proc.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_every_benchmark_answers_help(script: str) -> None:
    """Each script at least parses its arguments and imports what it needs."""
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"],
                          capture_output=True, text=True, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
