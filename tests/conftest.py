"""Shared fixtures: a small generated data set with its config, built once per session."""

from __future__ import annotations

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
