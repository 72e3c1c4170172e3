"""Config: one TOML file, validated on load, errors that say where, paths relative to it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipelines.config import PipelineConfig, load_config, write_data_config
from pipelines.errors import ConfigError

DATA = '[data]\ninteractions = "i.parquet"\nitems = "sub/items.csv"\nusers = "/abs/users.parquet"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DATA))
    assert cfg.data.interactions == (tmp_path / "i.parquet").resolve()
    assert cfg.data.items == (tmp_path / "sub" / "items.csv").resolve()
    assert cfg.data.users == Path("/abs/users.parquet")
    assert cfg.artifacts.root == (tmp_path / "artifacts").resolve()


def test_defaults_follow_the_data_contract(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DATA))
    assert cfg.columns.user_id == "user_id" and cfg.columns.ts == "ts"
    assert cfg.features.event_weights["impression"] == 0.0
    assert cfg.split.valid_days == 7 and cfg.split.test_days == 7


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (DATA + "[split]\nvalid_dayz = 3\n", "split.valid_dayz: unknown key"),
        (DATA + "[features]\nhistory_length = 'long'\n", "features.history_length"),
        (DATA + "[features]\nhistory_length = 0\n", "features.history_length"),
        (DATA + "[nonsense]\na = 1\n", "nonsense: unknown key"),
        (DATA + "[split]\nstrategy = 'random'\n", "split.strategy"),
        (
            DATA + "[split]\nvalid_start = 2024-02-01\ntest_start = 2024-01-01\n",
            "valid_start must be before test_start",
        ),
        (DATA + "[split]\nvalid_start = 2024-01-01\n", "either valid_start and test_start"),
        (DATA + "[features.event_weights]\nlike = 1.0\n", "features.event_weights.like"),
        ("[data]\ninteractions = 'i.parquet'\n", "data.items: Field required"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert where in str(err.value)
    assert str(tmp_path / "config.toml") in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[data\n"))


def test_timezones_normalise_to_naive_utc(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            DATA + "[split]\nvalid_start = 2024-01-01T02:00:00+02:00\n"
            "test_start = 2024-01-02T00:00:00Z\n",
        )
    )
    assert cfg.split.valid_start == datetime(2024, 1, 1, 0, 0)
    assert cfg.split.test_start == datetime(2024, 1, 2)


def test_round_trips_through_json(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DATA + "[features]\npopularity_windows_days = [2.0, 14.0]\n"))
    assert PipelineConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_written_config_loads(tmp_path: Path) -> None:
    path = write_data_config(
        tmp_path / "config.toml",
        split={"valid_start": datetime(2024, 1, 1), "test_start": datetime(2024, 2, 1)},
        ground_truth="gt",
        comment="made by a test",
    )
    cfg = load_config(path)
    assert cfg.data.ground_truth == (tmp_path / "gt").resolve()
    assert cfg.split.test_start == datetime(2024, 2, 1)
