"""The synthetic data generator: deterministic, valid, and shaped by its hidden model (weekly
users, and bursty users with item chains)."""

from __future__ import annotations

import json
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
    return {
        n: pl.read_parquet(small_data / f"{n}.parquet") for n in ("interactions", "items", "users")
    }


def test_same_seed_same_files(tmp_path: Path, small_data: Path) -> None:
    generate(SMALL, tmp_path)
    for name in ("interactions", "items", "users"):
        assert pl.read_parquet(tmp_path / f"{name}.parquet").equals(
            pl.read_parquet(small_data / f"{name}.parquet")
        ), name


def test_other_seed_other_data(tmp_path: Path, tables: dict[str, pl.DataFrame]) -> None:
    generate(GeneratorSpec(users=400, items=250, interactions=12_000, days=60, seed=4), tmp_path)
    assert not pl.read_parquet(tmp_path / "interactions.parquet").equals(tables["interactions"])


def test_output_meets_the_data_contract(small_config: PipelineConfig) -> None:
    t = validate_tables(small_config.data, small_config.columns)
    assert set(t.interactions["event"].unique()) == {
        "view",
        "click",
        "add_to_cart",
        "purchase",
        "impression",
    }
    assert set(t.items["kind"].unique()) == {"product", "ad"}
    assert t.interactions.height == pytest.approx(SMALL.interactions, rel=0.1)


def _first(df: pl.DataFrame, event: str) -> pl.DataFrame:
    return (
        df.filter(pl.col("event") == event).group_by("user_id", "item_id").agg(pl.col("ts").min())
    )


def test_funnel_order(tables: dict[str, pl.DataFrame]) -> None:
    inter = tables["interactions"]
    for later, earlier in (("purchase", "add_to_cart"), ("add_to_cart", "view")):
        j = _first(inter, later).join(_first(inter, earlier), on=["user_id", "item_id"], how="left")
        assert j["ts_right"].is_not_null().all(), f"{later} without {earlier}"
        assert (j["ts_right"] < j["ts"]).all()
    clicks = inter.filter(pl.col("event") == "click")
    shown = _first(inter, "impression")
    assert clicks.join(shown, on=["user_id", "item_id"], how="anti").height == 0
    n_view, n_cart, n_buy = (
        inter.filter(pl.col("event") == e).height for e in ("view", "add_to_cart", "purchase")
    )
    assert n_view > n_cart > n_buy > 0


def test_nothing_happens_before_an_item_or_user_exists(tables: dict[str, pl.DataFrame]) -> None:
    j = (
        tables["interactions"]
        .join(tables["items"].select("item_id", "created_ts"), on="item_id")
        .join(tables["users"].select("user_id", "signup_ts"), on="user_id")
    )
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


def test_behaviour_follows_the_hidden_utility(
    small_data: Path, tables: dict[str, pl.DataFrame]
) -> None:
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
    counts = (
        tables["interactions"]
        .filter(pl.col("event") == "view")
        .group_by("item_id")
        .len()
        .sort("len", descending=True)["len"]
        .to_numpy()
    )
    top_decile = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.3


def test_config_written_beside_the_data_runs(
    small_config: PipelineConfig, small_data: Path
) -> None:
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


# The bursty world: users in 1-3 short bursts over a year, items in chains users follow.

BURSTY = GeneratorSpec(
    users=2_000, items=1_000, interactions=24_000, days=365, seed=5, activity="bursty"
)


@pytest.fixture(scope="module")
def bursty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bursty")
    generate(BURSTY, out)
    return out


@pytest.fixture(scope="module")
def bursty_inter(bursty: Path) -> pl.DataFrame:
    return pl.read_parquet(bursty / "interactions.parquet")


def _views_with_previous(inter: pl.DataFrame) -> pl.DataFrame:
    """Views with the same user's previous view (users' first views left out)."""
    return (
        inter.filter(pl.col("event") == "view")
        .sort("user_id", "ts")
        .with_columns(prev=pl.col("item_id").shift(1).over("user_id"))
        .drop_nulls("prev")
    )


def test_bursty_users_come_in_few_short_bursts(bursty_inter: pl.DataFrame) -> None:
    per = bursty_inter.group_by("user_id").agg(
        days=pl.col("ts").dt.date().n_unique(),
        span=(pl.col("ts").max() - pl.col("ts").min()).dt.total_days(),
    )
    assert per["days"].median() <= 3
    assert per["span"].median() >= 30
    assert per["span"].max() > 200  # bursts are spread over the whole year


def test_a_week_holds_few_bursty_users(
    bursty_inter: pl.DataFrame, tables: dict[str, pl.DataFrame]
) -> None:
    def week_shares(inter: pl.DataFrame) -> np.ndarray:
        start = inter["ts"].min()
        week = ((inter["ts"] - start).dt.total_days() // 7).alias("week")
        n_users = inter["user_id"].n_unique()
        per_week = inter.select("user_id", week).unique().group_by("week").len()
        full = per_week.filter(pl.col("week") < pl.col("week").max())  # drop a partial last week
        return full["len"].to_numpy() / n_users

    assert week_shares(bursty_inter).max() < 0.10
    assert week_shares(tables["interactions"]).min() > 0.5  # weekly users: most in every week


def test_chain_successors_follow_their_predecessors(
    bursty: Path, bursty_inter: pl.DataFrame
) -> None:
    gt = GroundTruth.load(bursty / "ground_truth")
    assert gt.has_chains and gt.successor is not None
    chain = pl.read_parquet(bursty / "ground_truth" / "items.parquet").drop_nulls("chain")
    sizes = chain.group_by("chain").len()["len"]
    assert sizes.min() >= 2 and sizes.max() <= BURSTY.chain_max
    pairs = _views_with_previous(bursty_inter)
    nxt = gt.successor[gt.rows_of(pairs["prev"], gt.item_ids)]
    item = gt.rows_of(pairs["item_id"], gt.item_ids)
    has = nxt >= 0
    views = gt.rows_of(bursty_inter.filter(pl.col("event") == "view")["item_id"], gt.item_ids)
    share = np.bincount(views, minlength=len(gt.item_ids)) / len(views)
    follow, chance = np.mean(item[has] == nxt[has]), np.mean(share[nxt[has]])
    assert follow > 0.3 and follow > 50 * chance, (follow, chance)


def test_bursty_same_seed_same_files(tmp_path: Path, bursty: Path) -> None:
    generate(BURSTY, tmp_path)
    for name in ("interactions", "items", "users", "ground_truth/items", "ground_truth/users"):
        assert pl.read_parquet(tmp_path / f"{name}.parquet").equals(
            pl.read_parquet(bursty / f"{name}.parquet")
        ), name
    assert (tmp_path / "ground_truth" / "meta.json").read_text() == (
        bursty / "ground_truth" / "meta.json"
    ).read_text()


def test_bursty_output_meets_the_data_contract(bursty: Path) -> None:
    cfg = load_config(bursty / "config.toml")
    t = validate_tables(cfg.data, cfg.columns)
    assert set(t.interactions["event"].unique()) == {
        "view",
        "click",
        "add_to_cart",
        "purchase",
        "impression",
    }
    # over a year, fewer ad requests find a campaign in flight (weekly users too): rows < spec
    assert t.interactions.height == pytest.approx(BURSTY.interactions, rel=0.15)


def test_bursty_oracle_uses_the_chains(
    bursty: Path, bursty_inter: pl.DataFrame, small_data: Path
) -> None:
    gt = GroundTruth.load(bursty / "ground_truth")
    pairs = _views_with_previous(bursty_inter).sample(300, seed=0)
    users = gt.rows_of(pairs["user_id"], gt.user_ids)
    last = gt.rows_of(pairs["prev"], gt.item_ids)
    item = gt.rows_of(pairs["item_id"], gt.item_ids)
    plain_hits = chain_hits = 0
    for k, at in enumerate(pairs["ts"]):
        plain = gt.utility(users[k : k + 1], at)[0]
        util = gt.utility(users[k : k + 1], at, last_items=last[k : k + 1])[0]
        assert np.isfinite(util).all()
        nxt = gt.successor[last[k]]
        if nxt >= 0:  # the successor is the single likeliest next item (rho = 0.5)
            assert util.argmax() == nxt
            assert np.array_equal(np.delete(util, nxt), np.delete(plain, nxt))
        else:
            assert np.array_equal(util, plain)
        plain_hits += plain.argmax() == item[k]
        chain_hits += util.argmax() == item[k]
    assert chain_hits > 2 * plain_hits and chain_hits > 0.15 * len(pairs)
    # pair_utility agrees with utility; last_items finds each user's last view before `at`
    at = pairs["ts"].max()
    pu = gt.pair_utility(pairs["user_id"], pairs["item_id"], at, pairs["prev"])
    full = gt.utility(users, at, last_items=last)[np.arange(len(users)), item]
    assert np.allclose(pu, full, rtol=1e-5)
    lastv = gt.last_items(bursty_inter, at)
    v = bursty_inter.filter((pl.col("event") == "view") & (pl.col("ts") < at)).sort("ts")
    one = v.filter(pl.col("user_id") == v["user_id"][0])["item_id"][-1]
    assert (
        lastv[gt.rows_of(v["user_id"][:1], gt.user_ids)[0]]
        == gt.rows_of(pl.Series([one]), gt.item_ids)[0]
    )
    # a weekly set has no chains: the history changes nothing
    weekly = GroundTruth.load(small_data / "ground_truth")
    assert not weekly.has_chains
    at = weekly.end
    rows = np.arange(5)
    assert np.array_equal(
        weekly.utility(rows, at, last_items=np.zeros(5, np.int64)), weekly.utility(rows, at)
    )


def test_activity_settings_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "gen.toml"
    p.write_text('activity = "daily"\n')
    with pytest.raises(ConfigError, match="activity: expected one of"):
        load_spec(p)
    p.write_text('activity = "bursty"\nchain_follow = 1.0\n')
    with pytest.raises(ConfigError, match="chain_follow"):
        load_spec(p)
    spec = load_spec(Path(__file__).parents[1] / "data_samples" / "generator_bursty.toml")
    assert spec.activity == "bursty" and spec.days == 365


def test_generate_command_takes_the_activity(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(tmp_path),
            "--users",
            "300",
            "--items",
            "200",
            "--interactions",
            "4000",
            "--days",
            "120",
            "--activity",
            "bursty",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "ground_truth" / "meta.json").read_text())
    assert meta["spec"]["activity"] == "bursty" and meta["chain_follow"] == 0.5
    bad = runner.invoke(app, ["generate", "--out", str(tmp_path / "x"), "--activity", "daily"])
    assert bad.exit_code == 4 and "activity" in bad.output
