"""Each kind of failure, caused for real through `recengine`, exits with its own status (README,
"Exit codes") and prints its message without a traceback; a missing or refused artifact is an
`ArtifactError`, not a `DataError`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from engine.cli import EXIT_CODES, app
from engine.config import EngineConfig
from engine.jobs.artifacts import CURRENT, VERSIONS, current_version, read_manifest, run_lock
from pipelines.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    QualityGateError,
    RunLockedError,
    WriteError,
)
from serving.recommender import Recommender
from tests.conftest import copy_root, small_job

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"


CODES = {
    DataError: (3, "data"),
    ConfigError: (4, "config"),
    ArtifactError: (5, "artifact"),
    WriteError: (6, "write"),
    QualityGateError: (7, "gate"),
    RunLockedError: (8, "locked"),
}
"""The documented statuses (README, "Exit codes"): scripts depend on them, so they are
written out here, not read from the CLI."""


def fails(args: list[str], error: type[Exception], *shows: str) -> Result:
    """Run `recengine args`: it must exit with `error`'s documented status and print `shows`."""
    result = runner.invoke(app, args)
    code, kind = CODES[error]
    assert result.exit_code == code, result.output
    assert f"error ({kind}):" in result.output, result.output
    for text in shows:
        assert text in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    return result


def test_each_kind_has_its_own_code_outside_typers_and_in_the_readme() -> None:
    assert EXIT_CODES == CODES
    codes = [code for code, _ in CODES.values()]
    assert len(set(codes)) == len(codes)
    assert not {0, 1, 2} & set(codes)  # 0 success, 1 and 2 Typer's (abort, usage)
    table = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for error, (code, kind) in EXIT_CODES.items():
        assert re.search(rf"^\| {code} \| `{error.__name__}` \| {kind} \|", table, re.M), error


def test_bad_input_data(small_data: Path, tmp_path: Path) -> None:
    config = small_job(small_data, tmp_path / "data")
    inter = tmp_path / "data" / "interactions.parquet"
    inter.write_bytes(inter.read_bytes()[:200])  # truncated
    fails(["validate", "--config", str(config)], DataError, str(inter), "cannot be read")


def test_bad_config(small_data: Path, tmp_path: Path) -> None:
    config = small_job(small_data, tmp_path / "data")
    config.write_text(config.read_text() + "\n[serving]\nport = 80\n")
    fails(["validate", "--config", str(config)], ConfigError, str(config), "serving")


def test_missing_and_refused_artifacts(small_data: Path, tmp_path: Path) -> None:
    config = small_job(small_data, tmp_path / "data")
    no_vectors = tmp_path / "no-vectors"
    no_vectors.mkdir()
    fails(
        ["index", "--config", str(config), "--vectors", str(no_vectors)],
        ArtifactError,
        str(no_vectors / "items.parquet"),
        "vector file not found",
    )
    root = tmp_path / "artifacts"
    (root / VERSIONS / "v1").mkdir(parents=True)  # a version without its manifest
    (root / CURRENT).symlink_to(Path(VERSIONS) / "v1")
    nightly = ["nightly", "--config", str(config), "--artifacts", str(root)]
    fails(nightly, ArtifactError, "manifest not found")
    (root / CURRENT).unlink()
    (root / CURRENT).symlink_to(tmp_path / "data")  # a `current` that leads elsewhere
    fails(nightly, ArtifactError, str(root / CURRENT), "outside")
    with pytest.raises(ArtifactError, match="no published version"):
        Recommender.load(tmp_path / "empty")


def test_cannot_write(small_data: Path, tmp_path: Path) -> None:
    config = small_job(small_data, tmp_path / "data")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    fails(
        ["features", "--config", str(config), "--out", str(a_file / "features")],
        WriteError,
        str(a_file / "features"),
        "Not a directory",
    )


def test_a_locked_root(small_data: Path, tmp_path: Path) -> None:
    config = small_job(small_data, tmp_path / "data")
    root = tmp_path / "artifacts"
    with run_lock(root):
        fails(
            ["nightly", "--config", str(config), "--artifacts", str(root)],
            RunLockedError,
            "another recengine run",
        )


def test_the_quality_gate(published: tuple[EngineConfig, Path], tmp_path: Path) -> None:
    _, published_root = published
    root = copy_root(published_root, tmp_path / "artifacts")
    live = current_version(root)
    assert live is not None
    manifest = read_manifest(live)
    manifest["gate"] = dict.fromkeys(manifest["gate"], 1.0)  # a live version no model can match
    (live / "manifest.json").write_text(json.dumps(manifest))
    data = published_root.parent / "data"
    text = (data / "config.toml").read_text().replace("[jobs]\nk = 5\n", "[jobs]\nk = 4\n")
    assert "k = 4" in text  # a changed config: the job runs again
    config = tmp_path / "config.toml"
    config.write_text(re.sub(r'= "(\w+\.parquet)"', lambda m: f'= "{data / m[1]}"', text))
    fails(  # incremental: on the live models, the shortest run that reaches the gate
        ["nightly", "--config", str(config), "--artifacts", str(root), "--incremental"],
        QualityGateError,
        "quality gate: not published",
    )
    assert current_version(root) == live


def test_a_usage_error_stays_typers() -> None:
    result = runner.invoke(app, ["evaluate"])  # neither --config nor --compare
    assert result.exit_code == 2 and "--compare" in result.output, result.output
