"""The command line: every command has --help, the demo runs on the shipped sample, errors
exit non-zero without a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from engine.cli import SAMPLE_CONFIG, Config, app
from pipelines.config import load_config

runner = CliRunner()
COMMANDS = [
    "demo",
    "generate",
    "import",
    "validate",
    "features",
    "train",
    "index",
    "nightly",
    "evaluate",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.slow
def test_demo_publishes_a_version_from_the_shipped_sample(tmp_path: Path) -> None:
    """The whole nightly job on the sample (minutes: the fast suite runs it on a small set in
    test_nightly); a second run publishes nothing new."""
    sample = tmp_path / "data_samples"
    shutil.copytree(SAMPLE_CONFIG.parent, sample)
    result = runner.invoke(app, ["demo", "--config", str(sample / "config.toml")])
    assert result.exit_code == 0, result.output
    live = (tmp_path / "artifacts" / "current").resolve()
    assert f"product lists: {live / 'recs' / 'kind=product'}" in " ".join(result.output.split())
    metrics = json.loads((live / "report" / "metrics.json").read_text())
    stages = metrics["nightly"]
    assert stages["rerank"]["holdout_ndcg"] > stages["rerank"]["holdout_two_tower_ndcg"]
    assert stages["ads"]["ece_calibrated"] < stages["ads"]["ece_raw"]
    assert metrics["verdict"]["beats_best_baseline"], metrics["verdict"]
    products = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    assert products["user_id"].n_unique() == pl.read_parquet(sample / "users.parquet").height
    again = runner.invoke(app, ["demo", "--config", str(sample / "config.toml")])
    assert again.exit_code == 0 and "nothing new published" in again.output
    assert (tmp_path / "artifacts" / "current").resolve() == live


def test_generate_then_validate_then_features(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(out),
            "--users",
            "200",
            "--items",
            "100",
            "--interactions",
            "5000",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "ground_truth" / "meta.json").is_file()
    result = runner.invoke(app, ["validate", "--config", str(out / "config.toml")])
    assert result.exit_code == 0, result.output
    assert "input is valid" in result.output
    result = runner.invoke(
        app, ["features", "--config", str(out / "config.toml"), "--out", str(tmp_path / "feat")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "feat" / "vocab" / "item.parquet").is_file()


def test_generate_from_the_sample_spec_reproduces_the_sample(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "generate",
            "--spec",
            str(SAMPLE_CONFIG.parent / "generator.toml"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("interactions", "items", "users"):
        assert pl.read_parquet(tmp_path / f"{name}.parquet").equals(
            pl.read_parquet(SAMPLE_CONFIG.parent / f"{name}.parquet")
        ), name


def test_import_of_a_folder_without_movielens_files_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["import", "movielens", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 3
    assert "no MovieLens files found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_sample_config_is_valid() -> None:
    cfg = load_config(SAMPLE_CONFIG, Config)
    assert cfg.data.interactions.is_file() and cfg.data.ground_truth.is_dir()
