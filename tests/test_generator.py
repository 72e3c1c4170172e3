"""The synthetic data generator: deterministic, valid, and shaped by its hidden model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.config import PipelineConfig, load_config
from pipelines.errors import ConfigError
from pipelines.synthetic import GeneratorSpec, GroundTruth, generate
from pipelines.synthetic.generate import load_spec
from pipelines.validate import validate_tables
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def tables(small_data: Path) -> dict[str, pl.DataFrame]:
    return {n: pl.read_parquet(small_data / f"{n}.parquet") for n in ("interactions", "items", "users")}


def test_same_seed_same_files(tmp_path: Path, small_data: Path) -> None:
    generate(SMALL, tmp_path)
    for name in ("interactions", "items", "users"):
        assert pl.read_parquet(tmp_path / f"{name}.parquet").equals(
            pl.read_parquet(small_data / f"{name}.parquet")), name


def test_other_seed_other_data(tmp_path: Path, tables: dict[str, pl.DataFrame]) -> None:
    generate(GeneratorSpec(users=400, items=250, interactions=12_000, days=60, seed=4), tmp_path)
    assert not pl.read_parquet(tmp_path / "interactions.parquet").equals(tables["interactions"])


def test_output_meets_the_data_contract(small_config: PipelineConfig) -> None:
    t = validate_tables(small_config.data, small_config.columns)
    assert set(t.interactions["event"].unique()) == \
        {"view", "click", "add_to_cart", "purchase", "impression"}
    assert set(t.items["kind"].unique()) == {"product", "ad"}
    assert t.interactions.height == pytest.approx(SMALL.interactions, rel=0.1)


def _first(df: pl.DataFrame, event: str) -> pl.DataFrame:
    return df.filter(pl.col("event") == event).group_by("user_id", "item_id").agg(pl.col("ts").min())


def test_funnel_order(tables: dict[str, pl.DataFrame]) -> None:
    inter = tables["interactions"]
    for later, earlier in (("purchase", "add_to_cart"), ("add_to_cart", "view")):
        j = _first(inter, later).join(_first(inter, earlier), on=["user_id", "item_id"], how="left")
        assert j["ts_right"].is_not_null().all(), f"{later} without {earlier}"
        assert (j["ts_right"] < j["ts"]).all()
    clicks = inter.filter(pl.col("event") == "click")
    shown = _first(inter, "impression")
    assert clicks.join(shown, on=["user_id", "item_id"], how="anti").height == 0
    n_view, n_cart, n_buy = (inter.filter(pl.col("event") == e).height
                             for e in ("view", "add_to_cart", "purchase"))
    assert n_view > n_cart > n_buy > 0


def test_nothing_happens_before_an_item_or_user_exists(tables: dict[str, pl.DataFrame]) -> None:
    j = (tables["interactions"].join(tables["items"].select("item_id", "created_ts"), on="item_id")
         .join(tables["users"].select("user_id", "signup_ts"), on="user_id"))
    assert (j["ts"] >= j["created_ts"]).all()
    assert (j["ts"] >= j["signup_ts"]).all()


def test_cold_start_is_real(tables: dict[str, pl.DataFrame]) -> None:
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    start, end = inter["ts"].min(), inter["ts"].max()
    late_items = items.filter(pl.col("created_ts") > start + (end - start) * 0.5)
    late_users = users.filter(pl.col("signup_ts") > start + (end - start) * 0.5)
    assert late_items.height > 0 and late_users.height > 0
    assert inter.join(late_items, on="item_id").height > 0
    assert inter.join(late_users, on="user_id").height > 0


def test_ad_impressions_carry_propensities_within_flight(tables: dict[str, pl.DataFrame]) -> None:
    ads = tables["items"].filter(pl.col("kind") == "ad")
    assert ads["bid"].is_not_null().all() and (ads["bid"] > 0).all()
    imp = tables["interactions"].filter(pl.col("event") == "impression").join(ads, on="item_id")
    assert imp.height > 0
    p = imp["propensity"]
    assert p.is_not_null().all() and ((p > 0) & (p <= 1)).all()
    assert ((imp["ts"] >= imp["start_ts"]) & (imp["ts"] < imp["end_ts"])).all()
    organic = tables["interactions"].join(ads, on="item_id", how="anti")
    assert organic["propensity"].is_null().all()


def test_behaviour_follows_the_hidden_utility(small_data: Path, tables: dict[str, pl.DataFrame]) -> None:
    gt = GroundTruth.load(small_data / "ground_truth")
    views = tables["interactions"].filter(pl.col("event") == "view").sample(500, seed=0)
    u_row = {u: k for k, u in enumerate(gt.user_ids.to_list())}
    i_row = {i: k for k, i in enumerate(gt.item_ids.to_list())}
    chosen, rand = [], []
    rng = np.random.default_rng(0)
    for r in views.iter_rows(named=True):
        util = gt.utility(np.array([u_row[str(r["user_id"])]]), r["ts"])[0]
        chosen.append(np.mean(util[i_row[r["item_id"]]] > util))  # percentile of the chosen item
        rand.append(np.mean(util[rng.integers(len(util))] > util))
    assert np.mean(chosen) > 0.85 and np.mean(rand) < 0.6


def test_popularity_is_heavy_tailed(tables: dict[str, pl.DataFrame]) -> None:
    counts = (tables["interactions"].filter(pl.col("event") == "view")
              .group_by("item_id").len().sort("len", descending=True)["len"].to_numpy())
    top_decile = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.3


def test_config_written_beside_the_data_runs(small_config: PipelineConfig, small_data: Path) -> None:
    assert small_config.data.ground_truth == (small_data / "ground_truth").resolve()
    assert small_config.split.valid_days == 7


def test_spec_file(tmp_path: Path) -> None:
    p = tmp_path / "gen.toml"
    p.write_text("users = 10\nitems = 5\ninteractions = 100\nend = 2026-01-01T00:00:00Z\n")
    spec = load_spec(p, seed=9)
    assert (spec.users, spec.seed, spec.end.tzinfo) == (10, 9, None)
    assert spec.start == spec.end - timedelta(days=spec.days)
    p.write_text("userz = 10\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_spec(p)
    p.write_text("users = 'many'\n")
    with pytest.raises(ConfigError, match="users: expected int"):
        load_spec(p)
