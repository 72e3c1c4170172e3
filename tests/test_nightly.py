"""The nightly job: a complete, verified version with both list kinds; nothing new when
nothing changed; the quality gate holds `current` unless forced; retention; and a kill in the
middle of a stage (subprocess + SIGKILL) followed by a rerun ends with a complete version while
`current` never points at a partial one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from engine.config import EngineConfig
from engine.jobs.artifacts import VERSIONS, current_version, read_manifest, verify
from engine.jobs.nightly import run_nightly
from engine.jobs.stages import STAGES
from pipelines.errors import QualityGateError
from tests.conftest import copy_root, nightly_cmd, small_job, tally


@pytest.fixture
def job(published: tuple[EngineConfig, Path], tmp_path: Path) -> tuple[EngineConfig, Path]:
    """The session's published root, copied: these tests run the job on it again."""
    cfg, root = published
    return cfg, copy_root(root, tmp_path / "artifacts")


def test_publishes_a_complete_verified_version(published: tuple[EngineConfig, Path]) -> None:
    cfg, root = published
    live = current_version(root)
    assert live is not None and live.parent.name == VERSIONS
    manifest = verify(live)
    for key in ("inputs", "config", "libraries", "metrics", "files", "run_key", "gate"):
        assert key in manifest, key
    products = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    assert (
        products.columns[:4] == ["user_id", "rank", "item_id", "score"]
        and "why" in products.columns
    )
    items = pl.read_parquet(cfg.data.items)
    known = set(items.filter(pl.col("kind") == "product")["item_id"].to_list())
    assert set(products["item_id"].to_list()) <= known  # no padding, no ads, no unknown ids
    per_user = products.group_by("user_id").agg(pl.col("rank").sort())
    assert all(
        r == list(range(1, len(r) + 1)) and len(r) <= cfg.jobs.k for r in per_user["rank"].to_list()
    )
    assert per_user.height == pl.read_parquet(cfg.data.users).height
    assert products["why"].str.starts_with("sources: ").all()
    ads = pl.read_parquet(live / "recs" / "kind=ad" / "*.parquet")
    assert ads.columns == ["user_id", "rank", "item_id", "pctr", "bid", "ecpm"]
    assert ads.height > 0 and set(ads["item_id"].to_list()) <= set(
        items.filter(pl.col("kind") == "ad")["item_id"].to_list()
    )
    metrics = json.loads((live / "report" / "metrics.json").read_text())
    assert {"train", "rerank", "ads", "recs"} <= set(metrics["nightly"])
    assert "final" in metrics["methods"] and "oracle" not in metrics["methods"]  # no truth here
    assert '<section id="metrics">' in (live / "report" / "index.html").read_text()


def test_unchanged_inputs_publish_nothing(job: tuple[EngineConfig, Path]) -> None:
    cfg, root = job
    before = current_version(root)
    again = run_nightly(cfg, root)
    assert again.reason == "unchanged" and not again.published
    assert current_version(root) == before
    assert len(list((root / VERSIONS).iterdir())) == 1


def test_gate_holds_current_unless_forced(job: tuple[EngineConfig, Path]) -> None:
    cfg, root = job
    live = current_version(root)
    assert live is not None
    manifest = read_manifest(live)
    manifest["gate"] = dict.fromkeys(manifest["gate"], 1.0)  # a live version no model can match
    (live / "manifest.json").write_text(json.dumps(manifest))
    changed = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"k": 4})})
    with pytest.raises(QualityGateError, match="quality gate"):
        run_nightly(changed, root)
    assert current_version(root) == live
    forced = run_nightly(changed, root, force=True)  # resumes: every stage is recorded
    assert forced.published and current_version(root) == forced.version != live
    assert read_manifest(forced.version)["forced"] is True
    verify(forced.version)
    # retention 2: a third version removes the oldest, never the live one
    third = run_nightly(
        cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"k": 3})}), root, force=True
    )
    names = sorted(p.name for p in (root / VERSIONS).iterdir())
    assert len(names) == 2 and third.version.name in names and live.name not in names
    assert not list((root / "staging").iterdir())  # no run's leftovers stay behind


# Runs the CLI with one stage made to stop mid-way: right after the stage's first file lands
# (so it has written part of its outputs), or at its end before it is recorded if it writes
# nothing; "publish" stops after the version folder is moved into place, before `current`
# switches. It then says so in the marker file and waits to be killed.
DRIVER = """
import os, sys, time, pathlib
import engine.jobs.artifacts as artifacts
import engine.jobs.nightly as nightly
stage, marker = sys.argv[1], pathlib.Path(sys.argv[2])
real_replace = os.replace

def hold():
    marker.write_text(stage)
    time.sleep(600)

def wrap(fn):
    def run(r):
        def replace(a, b):
            real_replace(a, b)
            hold()
        os.replace = replace
        try:
            out = fn(r)
        finally:
            os.replace = real_replace
        hold()
        return out
    return run

if stage == "publish":
    artifacts.switch_current = lambda root, target: hold()
else:
    nightly.STAGES[:] = [(n, wrap(f) if n == stage else f) for n, f in nightly.STAGES]
from engine.cli import app
app(sys.argv[3:], prog_name="recengine")
"""


def kill_during(stage: str, config: Path, root: Path, *, timeout: float = 300) -> None:
    """Run the job until it stops inside `stage`, SIGKILL it; `current` must then be absent
    or a complete version."""
    marker = root.parent / "marker"
    marker.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", DRIVER, stage, str(marker), *nightly_cmd(config, root)[3:]]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    t0 = time.monotonic()
    try:
        while not marker.exists():
            assert proc.poll() is None, f"the job ended before {stage}: {proc.stderr.read()}"
            assert time.monotonic() - t0 < timeout
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    live = current_version(root)
    assert live is None or verify(live)
    tally("nightly: SIGKILLs survived")
    tally(f"nightly: SIGKILLs in {stage}")


def test_a_kill_in_the_middle_of_each_stage_resumes(
    published: tuple[EngineConfig, Path], small_data: Path, tmp_path: Path
) -> None:
    """One job killed in the middle of every stage in turn, then of its publish: each run
    resumes from the stages recorded before it (redoing the one killed half-way) and is
    killed in the next; the last run publishes the lists an uninterrupted run published."""
    config = small_job(small_data, tmp_path / "data")
    root = tmp_path / "artifacts"
    for stage in [n for n, _ in STAGES] + ["publish"]:
        kill_during(stage, config, root)
        if stage != "publish":
            assert not list(root.glob(f"staging/*/stages/{stage}.json")), "recorded, not killed"
        assert current_version(root) is None
    moved = list((root / VERSIONS).iterdir())  # the publish was killed before the switch
    assert len(moved) == 1
    done = subprocess.run(nightly_cmd(config, root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    live = current_version(root)
    assert live == moved[0]  # the rerun switched to the version already in place
    verify(live)
    assert len(list((root / VERSIONS).iterdir())) == 1  # the rerun finished that version
    lists = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    uninterrupted = current_version(published[1])
    assert uninterrupted is not None
    want = pl.read_parquet(uninterrupted / "recs" / "kind=product" / "*.parquet")
    # the same users with lists as long (the re-ranker's fit is not bit-reproducible across
    # runs, so the orders may differ)
    assert lists.height > 0 and lists.group_by("user_id").len().sort("user_id").equals(
        want.group_by("user_id").len().sort("user_id")
    )
