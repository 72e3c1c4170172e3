"""Shared fixtures: a small generated data set with its config, built once per session; and
the reliability tally (bad inputs tried, kills survived, reloads made, errors seen) that the
tests add to and the session prints at its end (RELIABILITY.md records it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

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


TALLY: Counter[str] = Counter()


def tally(name: str, n: int = 1) -> None:
    """Add `n` to the reliability figure `name` (printed at the end of the session)."""
    TALLY[name] += n


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.section("reliability tally")
        for name, n in sorted(TALLY.items()):
            terminalreporter.write_line(f"{name:<54} {n:>8,}")
