"""Shared fixtures and helpers: a small generated data set with its config, a nightly job over
it with small models, one version published from it and one evaluation report, each built
once per session (tests that change a published root work on a copy: `copy_root`); and the
reliability tally (bad inputs tried, kills survived, reloads made, errors seen) that the
tests add to and the session prints at its end (RELIABILITY.md records it)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.config import EngineConfig
from engine.jobs.nightly import run_nightly
from pipelines.config import PipelineConfig, load_config
from pipelines.dataset import FeatureSet, build_features
from pipelines.synthetic import GeneratorSpec, generate

SMALL = GeneratorSpec(users=400, items=250, interactions=12_000, days=60, seed=3)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data set (tables, ground truth, config.toml) in a session-wide folder."""
    out = tmp_path_factory.mktemp("small")
    generate(SMALL, out)
    return out


@pytest.fixture(scope="session")
def small_config(small_data: Path) -> PipelineConfig:
    return load_config(small_data / "config.toml")


@pytest.fixture(scope="session")
def small_features(small_config: PipelineConfig) -> FeatureSet:
    return build_features(small_config)


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
min_lists = 50
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


def nightly_cmd(config: Path, root: Path) -> list[str]:
    """The nightly job as a separate process (for kills and timeouts)."""
    cmd = [sys.executable, "-m", "engine.cli", "nightly"]
    return [*cmd, "--config", str(config), "--artifacts", str(root)]


def copy_root(root: Path, to: Path) -> Path:
    """A copy of an artifacts root (its `current` link is relative, so it holds)."""
    shutil.copytree(root, to, symlinks=True)
    return to


@pytest.fixture(scope="session")
def published(
    small_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EngineConfig, Path]:
    """(config, artifacts root) of one nightly run on the small job. Read only: a test that
    runs the job again, reloads or damages it works on `copy_root` of it."""
    folder = tmp_path_factory.mktemp("published")
    cfg = load_config(small_job(small_data, folder / "data"), EngineConfig)
    run_nightly(cfg, folder / "artifacts")
    return cfg, folder / "artifacts"


@pytest.fixture(scope="session")
def published_config(published: tuple[EngineConfig, Path]) -> Path:
    """The config file `published` ran with."""
    return published[1].parent / "data" / "config.toml"


@pytest.fixture(scope="session")
def evaluation_report(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of `recengine evaluate` on the small set (index.html, metrics.json)."""
    folder = tmp_path_factory.mktemp("evaluate")
    config = folder / "config.toml"
    text = (small_data / "config.toml").read_text()
    # the small set's tables and ground truth stay where they are; only the config moves
    text = re.sub(r'= "(\w+\.parquet|ground_truth)"', lambda m: f'= "{small_data / m[1]}"', text)
    config.write_text(text + SMALL_SECTIONS)
    out = folder / "report"
    result = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "final - best baseline" in result.output
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`recengine serve` in a subprocess on a free loopback port, ready when started."""

    def __init__(self, root: Path, *, token_file: Path | None = None, workers: int = 1) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--artifacts", str(root)]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--reload-interval", "0.2"]
        if token_file is not None:
            cmd += ["--token-file", str(token_file)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def wait_ready(self, timeout: float = 90.0, *, status: int = 200) -> None:
        """Until /readyz answers `status` (503: up, with no version loaded)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"no /readyz {status} from {self.url} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server and every worker it started."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


TALLY: Counter[str] = Counter()


def tally(name: str, n: int = 1) -> None:
    """Add `n` to the reliability figure `name` (printed at the end of the session)."""
    TALLY[name] += n


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.section("reliability tally")
        for name, n in sorted(TALLY.items()):
            terminalreporter.write_line(f"{name:<54} {n:>8,}")
