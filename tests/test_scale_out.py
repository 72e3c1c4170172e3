"""The nightly job as several processes: `--nproc 2` on one machine and two torchrun "nodes"
meeting on the loopback interface publish what one process publishes (the same product and
ad lists, models and figures); a SIGKILL of one rank in a random stage leaves `current`
alone, and the rerun resumes and publishes the same lists."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from engine.config import EngineConfig
from engine.jobs.artifacts import current_version, read_manifest, verify
from engine.jobs.nightly import run_nightly
from engine.jobs.ranks import Ranks, rank_pids, user_ranks
from engine.jobs.stages import STAGES
from pipelines.config import load_config
from tests.conftest import copy_root, free_port, nightly_cmd, small_job, tally

TIMING = ("seconds", "build_seconds")
"""Figures that measure time: the only ones two runs may differ in."""


def run(cmd: list[str], timeout: float = 600) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def nproc_cmd(config: Path, root: Path, n: int = 2) -> list[str]:
    return [*nightly_cmd(config, root), "--nproc", str(n)]


def lists(version: Path, kind: str) -> pl.DataFrame:
    return pl.read_parquet(version / "recs" / f"kind={kind}" / "*.parquet").sort("user_id", "rank")


def figures(version: Path) -> dict[str, dict[str, object]]:
    """Every stage's figures bar those that measure time."""
    metrics = read_manifest(version)["metrics"]
    assert isinstance(metrics, dict)
    return {
        stage: {k: v for k, v in f.items() if not any(k.endswith(t) for t in TIMING)}
        for stage, f in metrics.items()
    }


def assert_same_version(one: Path, many: Path) -> None:
    """`many` (built by several ranks) holds what `one` (one process) holds."""
    for kind in ("product", "ad"):
        a, b = lists(one, kind), lists(many, kind)
        assert a.height > 0
        assert a.equals(b), f"{kind} lists differ"
    assert figures(one) == figures(many)
    for rel in ("rerank/model.txt", "rerank/features.json", "ads/model.txt"):
        if (one / rel).is_file():
            assert (one / rel).read_bytes() == (many / rel).read_bytes(), rel
    a = torch.load(one / "embeddings" / "model.pt", weights_only=True)
    b = torch.load(many / "embeddings" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for path in sorted((one / "request").glob("*.npy")):
        assert np.array_equal(np.load(path), np.load(many / "request" / path.name)), (
            f"request/{path.name}"
        )
    parts = sorted(p.name for p in (many / "recs" / "kind=product").glob("*.parquet"))
    assert {p.split("-")[1] for p in parts} == {"000", "001"}, parts  # each rank wrote its own


def test_users_are_split_by_a_stable_hash() -> None:
    ids = [f"u{i}" for i in range(10_000)]
    owner = user_ranks(ids, 3)
    assert np.array_equal(owner, user_ranks(list(reversed(ids)), 3)[::-1])  # by id, not place
    assert np.bincount(owner).min() > 3_000  # about a third each
    # the digest is fixed: a rerun on another machine or library version owns the same users
    assert user_ranks(["u0", "u1", "42", "alice", "bob", "carol"], 4).tolist() == [3, 2, 3, 1, 0, 1]
    alone = Ranks()
    assert alone.mine(ids).all() and alone.broadcast({"a": 1}) == {"a": 1}


@pytest.fixture(scope="module")
def budgeted(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, root of one process's version) of the small job with ad budgets that run out
    a third of the way through the users, so that the auction's order matters: a split of
    the auction between ranks would spend differently."""
    folder = tmp_path_factory.mktemp("budgeted")
    config = small_job(small_data, folder / "data")
    items = folder / "data" / "items.parquet"
    pl.read_parquet(items).with_columns(
        pl.when(pl.col("kind") == "ad").then(pl.lit(0.02)).otherwise(None).alias("daily_budget")
    ).write_parquet(items)
    run_nightly(load_config(config, EngineConfig), folder / "one")
    return config, folder / "one"


def test_two_processes_publish_what_one_publishes(
    budgeted: tuple[Path, Path], tmp_path: Path
) -> None:
    config, one_root = budgeted
    one = current_version(one_root)
    assert one is not None
    spend = read_manifest(one)["metrics"]["recs"]["ad_spend"]  # type: ignore[index]
    campaigns = pl.read_parquet(config.parent / "items.parquet")["campaign_id"].n_unique() - 1
    assert 0 < spend <= campaigns * 0.02 * 1.5  # the budgets bind
    run(nproc_cmd(config, tmp_path / "artifacts"))
    many = current_version(tmp_path / "artifacts")
    assert many is not None
    assert read_manifest(many)["ranks"] == 2
    assert_same_version(one, many)


def test_two_torchrun_nodes_on_loopback_publish_what_one_process_publishes(
    published: tuple[EngineConfig, Path], published_config: Path, tmp_path: Path
) -> None:
    port, root = free_port(), tmp_path / "artifacts"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=nightly-loopback",
        "-m",
        "engine.cli",
        "nightly",
        "--config",
        str(published_config),
        "--artifacts",
        str(root),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core for each "machine"
    nodes = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outs = [node.communicate(timeout=600)[0].decode(errors="replace") for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    many = current_version(root)
    assert many is not None
    assert read_manifest(many)["ranks"] == 2
    assert_same_version(current_version(published[1]), many)  # type: ignore[arg-type]


ORDER = [name for name, _ in STAGES]


def kill_a_rank_and_resume(
    published: tuple[EngineConfig, Path], config: Path, folder: Path, rng: random.Random
) -> str:
    """Run a new version of the published job as two ranks, SIGKILL one of them in a random
    stage, check that `current` is untouched, rerun it and check that it resumes and publishes
    the same lists; the stage the kill landed in."""
    root = copy_root(published[1], folder / "artifacts")
    live = current_version(root)
    assert live is not None
    stage, victim = rng.choice(ORDER), rng.randrange(2)
    proc = subprocess.Popen(
        nproc_cmd(config, root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not list(root.glob(f"staging/*/stages/{stage}.started")):
            assert proc.poll() is None and time.monotonic() < deadline, "never reached " + stage
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        pids = rank_pids(proc.pid)
        assert set(pids) == {0, 1}, pids
        os.kill(pids[victim], signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode != 0
    assert not rank_pids(proc.pid), "a rank outlived the run"
    assert current_version(root) == live  # untouched
    verify(live)
    staging = next(root.glob("staging/*/stages"))
    records = {p.name: p.stat().st_mtime_ns for p in staging.glob("*.json")}
    landed = next(n for n in ORDER if f"{n}.json" not in records)
    print(f"rank {victim} killed in the {landed} stage")
    run(nproc_cmd(config, root))
    new = current_version(root)
    assert new is not None and new != live
    for name, mtime in records.items():  # the stages done before the kill were not run again
        assert json.loads((new / "stages" / name).read_text())
        assert (new / "stages" / name).stat().st_mtime_ns == mtime, name
    for kind in ("product", "ad"):
        assert lists(live, kind).equals(lists(new, kind))
    tally(f"nightly ranks: SIGKILLs of a rank in {landed}")
    tally("nightly ranks: SIGKILLs survived")
    return landed


def retained(published_config: Path, keep: int, name: str) -> Path:
    """The published job's config with `[jobs] retention = keep`: a new version to build,
    with the same lists (written beside the tables its paths name)."""
    config = published_config.with_name(f"{name}.toml")
    config.write_text(published_config.read_text().replace("retention = 2", f"retention = {keep}"))
    return config


def test_a_rank_killed_in_a_random_stage_leaves_current_and_the_rerun_resumes(
    published: tuple[EngineConfig, Path], published_config: Path, tmp_path: Path
) -> None:
    config = retained(published_config, 3, f"kill-{tmp_path.name}")
    kill_a_rank_and_resume(published, config, tmp_path, random.Random(os.urandom(8)))


@pytest.mark.slow
def test_ranks_killed_in_many_random_stages(
    published: tuple[EngineConfig, Path], published_config: Path, tmp_path: Path
) -> None:
    rng = random.Random(os.urandom(8))
    for n in range(8):
        config = retained(published_config, 3 + n, f"kills-{tmp_path.name}-{n}")
        kill_a_rank_and_resume(published, config, tmp_path / str(n), rng)


def test_a_rank_that_cannot_see_the_root_is_refused(tmp_path: Path) -> None:
    """Each rank given its own root (as when one machine lacks the shared folder)."""
    port = free_port()
    script = (
        "import os, sys; from datetime import timedelta; from pathlib import Path;"
        "from engine.jobs.ranks import Ranks;"
        "r = Ranks.join(timedelta(seconds=60));"
        f"root = Path(r'{tmp_path}') / f'root-{{r.rank}}'; root.mkdir();"
        "r.check_root(root)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={
                **os.environ,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [1, 1]
    for err in errs:
        assert "rank 1 on" in err and "cannot see the artifacts root" in err, err[-2000:]


def test_a_rank_that_fails_gives_the_launcher_its_exit_status(
    small_data: Path, tmp_path: Path
) -> None:
    """Rank 0 refuses a bad table in the validate stage while rank 1 waits: the run ends
    with the data error's status (3), as one process would, not torchrun's 1."""
    config = small_job(small_data, tmp_path / "data")
    items = tmp_path / "data" / "items.parquet"
    table = pl.read_parquet(items)
    pl.concat([table, table.head(1)]).write_parquet(items)  # an item id twice
    proc = subprocess.run(
        nproc_cmd(config, tmp_path / "artifacts"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "error (data)" in proc.stdout + proc.stderr
    assert current_version(tmp_path / "artifacts") is None
