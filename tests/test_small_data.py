"""However little valid data a shop starts with, the nightly job publishes a verified
version or stops with a DataError on the interactions file saying there is too little data
(or no rows at all), never a crash from inside a model library.
Hypothesis draws subsets of the small generated set: from one user to all 400, from one day
to all 60, with or without ads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings

from engine.config import EngineConfig
from engine.jobs.artifacts import verify
from engine.jobs.nightly import run_nightly
from pipelines.config import load_config
from pipelines.errors import DataError
from tests.conftest import SMALL_SECTIONS, tally

SUBSETS = {"users": st.integers(1, 400), "days": st.floats(0.5, 60), "ads": st.booleans()}


def nightly_on_subset(small_data: Path, users: int, days: float, ads: bool) -> None:
    items = pl.read_parquet(small_data / "items.parquet")
    if not ads:
        items = items.filter(pl.col("kind") == "product")
    kept = pl.read_parquet(small_data / "users.parquet").head(users)
    inter = pl.read_parquet(small_data / "interactions.parquet")
    inter = inter.filter(
        pl.col("user_id").is_in(kept["user_id"].implode())
        & pl.col("item_id").is_in(items["item_id"].implode())
        & (pl.col("ts") > inter["ts"].max() - pl.duration(days=days))
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, frame in (("interactions", inter), ("items", items), ("users", kept)):
            frame.write_parquet(folder / f"{name}.parquet")
        text = (
            (small_data / "config.toml").read_text().replace('ground_truth = "ground_truth"\n', "")
        )
        (folder / "config.toml").write_text(text + SMALL_SECTIONS)
        try:
            result = run_nightly(
                load_config(folder / "config.toml", EngineConfig), folder / "artifacts"
            )
        except DataError as err:  # too little to train on: says so, naming the file
            assert err.file == str(folder / "interactions.parquet")
            assert "too little data" in str(err) or "table has no rows" in str(err)
            tally("data subsets: refused with a clear error")
        else:
            verify(result.version)
            tally("data subsets: published")


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(**SUBSETS)
def test_any_subset_publishes_or_says_why(
    small_data: Path, users: int, days: float, ads: bool
) -> None:
    nightly_on_subset(small_data, users, days, ads)


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(**SUBSETS)
def test_many_subsets_publish_or_say_why(
    small_data: Path, users: int, days: float, ads: bool
) -> None:
    nightly_on_subset(small_data, users, days, ads)
