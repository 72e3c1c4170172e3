"""The nightly job: a complete, verified version with both list kinds; nothing new when
nothing changed; the quality gate holds `current` unless forced; retention; and a kill in the
middle of a stage (subprocess + SIGKILL) followed by a rerun ends with a complete version while
`current` never points at a partial one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from engine.config import EngineConfig
from engine.jobs.artifacts import VERSIONS, current_version, read_manifest, verify
from engine.jobs.nightly import QualityGateError, run_nightly
from engine.jobs.stages import STAGES
from pipelines.config import load_config

SMALL_SECTIONS = """
[model]
dim = 16
embedding_dim = 16
hidden = [32]

[train]
epochs = 2
batch_size = 256
eval_users = 200

[candidates]
ann = 30
covisit = 20
content = 10
trending = 10
repeat = 5
cold_user = 10

[rerank]
training_cutoffs = 2
min_data_in_leaf = 5
num_boost_round = 40
early_stopping_rounds = 10

[ads]
min_data_in_leaf = 5

[jobs]
k = 5
retention = 2
user_chunk = 150
"""


def small_job(small_data: Path, folder: Path) -> Path:
    """A config file over the small generated set, with small models, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        shutil.copy(small_data / name, folder / name)
    text = (small_data / "config.toml").read_text().replace('ground_truth = "ground_truth"\n', "")
    path = folder / "config.toml"
    path.write_text(text + SMALL_SECTIONS)
    return path


@pytest.fixture(scope="module")
def job(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EngineConfig, Path]:
    folder = tmp_path_factory.mktemp("nightly")
    cfg = load_config(small_job(small_data, folder / "data"), EngineConfig)
    root = folder / "artifacts"
    run_nightly(cfg, root)
    return cfg, root


def test_publishes_a_complete_verified_version(job: tuple[EngineConfig, Path]) -> None:
    cfg, root = job
    live = current_version(root)
    assert live is not None and live.parent.name == VERSIONS
    manifest = verify(live)
    for key in ("inputs", "config", "libraries", "metrics", "files", "run_key", "gate"):
        assert key in manifest, key
    products = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    assert products.columns[:4] == ["user_id", "rank", "item_id", "score"] and "why" in products.columns
    items = pl.read_parquet(cfg.data.items)
    known = set(items.filter(pl.col("kind") == "product")["item_id"].to_list())
    assert set(products["item_id"].to_list()) <= known  # no padding, no ads, no unknown ids
    per_user = products.group_by("user_id").agg(pl.col("rank").sort())
    assert all(r == list(range(1, len(r) + 1)) and len(r) <= cfg.jobs.k
               for r in per_user["rank"].to_list())
    assert per_user.height == pl.read_parquet(cfg.data.users).height
    assert products["why"].str.starts_with("sources: ").all()
    ads = pl.read_parquet(live / "recs" / "kind=ad" / "*.parquet")
    assert ads.columns == ["user_id", "rank", "item_id", "pctr", "bid", "ecpm"]
    metrics = json.loads((live / "report" / "metrics.json").read_text())
    assert {"train", "rerank", "ads", "recs"} <= set(metrics)


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
    manifest["gate"] = {k: 1.0 for k in manifest["gate"]}  # a live version no model can match
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
    third = run_nightly(cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"k": 3})}),
                        root, force=True)
    names = sorted(p.name for p in (root / VERSIONS).iterdir())
    assert len(names) == 2 and third.version.name in names and live.name not in names


def _nightly_cmd(config: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "nightly", "--config", str(config),
            "--artifacts", str(root)]


def kill_during(stage: str, config: Path, root: Path, *, timeout: float = 300) -> None:
    """Start the job and SIGKILL it once `stage` has started (its predecessor is recorded);
    `current` must be absent or complete the whole time."""
    names = [n for n, _ in STAGES]
    before = names[names.index(stage) - 1] if names.index(stage) else None
    proc = subprocess.Popen(_nightly_cmd(config, root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if before is None or list(root.glob(f"staging/*/stages/{before}.json")):
                time.sleep(0.3 if before is None else 0.05)  # inside the stage now
                break
            assert proc.poll() is None, "the job ended before the stage to kill"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    live = current_version(root)
    assert live is None or verify(live)


def resume_after_kill(stage: str, small_data: Path, folder: Path) -> None:
    config = small_job(small_data, folder / "data")
    root = folder / "artifacts"
    kill_during(stage, config, root)
    assert not list(root.glob(f"staging/*/stages/{stage}.json")), "killed before it finished"
    done = subprocess.run(_nightly_cmd(config, root), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    live = current_version(root)
    assert live is not None
    verify(live)
    assert pl.read_parquet(live / "recs" / "kind=product" / "*.parquet").height > 0


def test_a_kill_in_the_middle_of_training_resumes(small_data: Path, tmp_path: Path) -> None:
    resume_after_kill("train", small_data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [n for n, _ in STAGES if n != "train"])
def test_a_kill_in_the_middle_of_each_stage_resumes(stage: str, small_data: Path,
                                                   tmp_path: Path) -> None:
    resume_after_kill(stage, small_data, tmp_path)
