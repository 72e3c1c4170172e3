"""The benchmark suite's bookkeeping: what `make bench` writes must say what was measured (each
figure's runs, median, min-max, ratio and goal) and the runner must refuse a benchmark it does
not know rather than run nothing. The figures themselves live in BENCHMARKS.md, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from harness import Report, in_child, summary  # noqa: E402


def test_report_json_holds_every_run_and_the_goal(tmp_path: Path, capsys) -> None:
    report = Report("unit")
    report.add(
        "search", [30.0, 10.0, 20.0], "q/s", ratio=("numpy", 2.5), goal=">= 2x numpy", met=True
    )
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
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--only", "nope"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "unknown benchmarks ['nope']" in proc.stderr and "retrieval" in proc.stderr


def test_every_benchmark_answers_help() -> None:
    """Each script at least parses its arguments and imports what it needs (two at a time:
    most of the cost is each process importing torch)."""
    scripts = sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert len(scripts) > 10

    def helped(script: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        cmd = [sys.executable, str(BENCH / script), "--help"]
        return script, subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH.parent)

    with ThreadPoolExecutor(2) as pool:
        for script, proc in pool.map(helped, scripts):
            assert proc.returncode == 0, f"{script}: {proc.stderr}"
            assert "usage:" in proc.stdout, script


def _real_quality():
    import bench_real_quality

    return bench_real_quality


def test_real_quality_grocery_holds_out_each_users_latest_fifth(tmp_path: Path) -> None:
    """A user with 10 rows holds out their 2 latest (ties in time by file order), one with 3
    rows 1, one with a single row none; the rest keep their real timestamps."""
    rows = ["user_id\titem_id\ttime"]
    rows += [f"a\t{i}\t{1_000_000 + min(i, 7) * 86_400}" for i in range(10)]  # 7-9 tie
    rows += ["b\t1\t1000000", "b\t3\t1200000", "b\t2\t1100000", "c\t5\t1000000"]
    (tmp_path / "interactions.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "item_meta.tsv").write_text(
        "item_id\ti_category\tr_complement\tr_substitute\n"
        + "".join(f"{i}\t{i % 3}\t[]\t[]\n" for i in range(10))
    )
    conv = _real_quality().convert_grocery(tmp_path)
    held = {u: sorted(g["item_id"].to_list()) for (u,), g in conv.test.group_by("user_id")}
    assert held == {"a": ["8", "9"], "b": ["3"]}
    assert conv.train.height == 14 - 3
    assert conv.train.filter(pl.col("user_id") == "c")["item_id"].to_list() == ["5"]
    assert set(conv.train["event"]) == {"purchase"}
    assert str(conv.train.filter(pl.col("item_id") == "0")["ts"][0]) == "1970-01-12 13:46:40"
    assert sorted(conv.users["user_id"]) == ["a", "b", "c"]
    assert dict(conv.items.select("item_id", "category").iter_rows())["4"] == "1"


def test_real_quality_sequences_end_on_one_day_and_hold_out_the_last_item(tmp_path: Path) -> None:
    (tmp_path / "Tiny.txt").write_text("1 10 11 12 13\n2 11 14\n3 12 15 16 10 13 17\n")
    (tmp_path / "Tiny_item2attributes.json").write_text(json.dumps({"10": [1, 2], "11": [3]}))
    mod = _real_quality()
    conv = mod.convert_sequences(tmp_path, "Tiny")
    assert dict(conv.test.select("user_id", "item_id").iter_rows()) == {
        "1": "13",
        "2": "14",
        "3": "17",
    }
    assert set(conv.test["ts"]) == {mod.END_DAY}
    last = conv.train.group_by("user_id").agg(pl.col("ts").max(), pl.col("item_id").last())
    assert set(last["ts"]) == {mod.END_DAY - timedelta(days=1)}  # every user, same day
    one = conv.train.filter(pl.col("user_id") == "3")
    assert one["item_id"].to_list() == ["12", "15", "16", "10", "13"]  # oldest first
    assert one["ts"].diff().drop_nulls().to_list() == [timedelta(days=1)] * 4
    tags = dict(conv.items.select("item_id", "tags").iter_rows())
    assert tags["10"] == ["1", "2"] and tags["11"] == ["3"] and tags["17"] == []
    work = tmp_path / "work"
    config = mod.write_work(conv, work, "leave_last_out")
    assert 'strategy = "leave_last_out"' in config.read_text()
    assert pl.read_parquet(work / "interactions.parquet").columns == [
        "user_id",
        "item_id",
        "ts",
        "event",
    ]


def test_real_quality_max_users_keeps_the_sampled_users_rows_and_every_item(tmp_path: Path) -> None:
    lines = [f"{u} " + " ".join(str(u * 10 + i) for i in range(5)) for u in range(1, 21)]
    (tmp_path / "Tiny.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Tiny_item2attributes.json").write_text("{}")
    conv = _real_quality().convert_sequences(tmp_path, "Tiny", max_users=5, seed=1)
    assert conv.users.height == 5 and conv.test.height == 5 and conv.train.height == 20
    assert conv.items.height == 100  # the whole catalogue: no item listed for being a test item


def test_real_quality_scores_lists_by_full_ranking() -> None:
    """NDCG@10 with binary relevance and an ideal over min(|truth|, 10); a user without a list
    scores 0."""
    mod = _real_quality()
    from engine.evaluation.metrics import Truth

    truth = Truth.from_frame(
        pl.DataFrame({"user_idx": [0, 0, 1, 2], "item_idx": [5, 6, 7, 8], "label": [1, 1, 1, 1]})
    )
    top = np.full((3, 10), -1, np.int64)
    top[0, :2] = [9, 5]  # one of two relevant items at rank 2
    top[1, 0] = 7  # at rank 1; user 2 has no list
    got = mod.scores(top, truth)
    ideal = 1 + 1 / np.log2(3)
    assert got["ndcg@10"] == pytest.approx(((1 / np.log2(3)) / ideal + 1 + 0) / 3)
    assert got["recall@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert got["hit_rate@10"] == pytest.approx(2 / 3)
