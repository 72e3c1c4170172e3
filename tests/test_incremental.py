"""`nightly --incremental`: items and users that came after the live version join it by the
content path (the model is reused byte for byte), keep every trained index, enter the index
and get lists; nothing changed publishes nothing; models past `full_retrain_days` retrain."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from engine.config import EngineConfig
from engine.jobs.artifacts import current_version, read_manifest, verify
from engine.jobs.nightly import run_nightly
from pipelines.config import load_config
from tests.conftest import small_job


def without_newest(folder: Path, share: float = 0.1) -> tuple[set[str], set[str]]:
    """Drop the newest products and users (and their interactions) from the tables in
    `folder`; the dropped ids."""
    items = pl.read_parquet(folder / "items.parquet")
    users = pl.read_parquet(folder / "users.parquet")
    products = items.filter(pl.col("kind") == "product").sort("created_ts", "item_id")
    new_items = set(
        products.tail(int(products.height * share))["item_id"].cast(pl.String).to_list()
    )
    by_signup = users.sort("signup_ts", "user_id")
    new_users = set(by_signup.tail(int(users.height * share))["user_id"].cast(pl.String).to_list())
    inter = pl.read_parquet(folder / "interactions.parquet")
    gone_item = pl.col("item_id").cast(pl.String).is_in(list(new_items))
    gone_user = pl.col("user_id").cast(pl.String).is_in(list(new_users))
    inter.filter(~gone_item & ~gone_user).write_parquet(folder / "interactions.parquet")
    items.filter(~gone_item).write_parquet(folder / "items.parquet")
    users.filter(~gone_user).write_parquet(folder / "users.parquet")
    return new_items, new_users


@pytest.fixture(scope="module")
def runs(small_data: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("incremental")
    config = small_job(small_data, folder / "data")
    new_items, new_users = without_newest(folder / "data")
    root = folder / "artifacts"
    cfg = load_config(config, EngineConfig)
    first = run_nightly(cfg, root)
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        shutil.copy(small_data / name, folder / "data" / name)  # the new day's full tables
    second = run_nightly(cfg, root, incremental=True)
    return cfg, root, first, second, new_items, new_users


def test_new_items_and_users_join_without_a_retrain(runs) -> None:
    _cfg, root, first, second, new_items, new_users = runs
    assert second.published and current_version(root) == second.version
    manifest = verify(second.version)
    assert manifest["incremental_from"] == first.version.name
    assert manifest["trained_at"] == read_manifest(first.version)["trained_at"]
    for name in ("embeddings/model.pt", "rerank/model.txt"):
        assert (second.version / name).read_bytes() == (first.version / name).read_bytes()
    old_ids = pl.read_parquet(first.version / "vocab" / "item.parquet")
    new_ids = pl.read_parquet(second.version / "vocab" / "item.parquet")
    assert new_ids.head(old_ids.height).equals(old_ids)  # every trained index kept
    vectors = pl.read_parquet(second.version / "embeddings" / "items.parquet")
    joined = vectors.filter(pl.col("item_id").is_in(list(new_items)))
    assert joined.height == len(new_items) and joined["content_only"].all()
    indexed = set(pl.read_parquet(second.version / "index" / "rows.parquet")["item_idx"].to_list())
    eligible = pl.read_parquet(second.version / "features" / "items.parquet").filter(
        pl.col("item_id").is_in(list(new_items)) & pl.col("available")
    )
    assert eligible.height and set(eligible["item_idx"].to_list()) <= indexed
    lists = pl.read_parquet(second.version / "recs" / "kind=product" / "*.parquet")
    assert new_users <= set(lists["user_id"].to_list())
    assert lists["item_id"].is_in(list(new_items)).any()  # new items reach the lists


def test_unchanged_inputs_publish_nothing_after_an_incremental_run(runs) -> None:
    cfg, root, _, second, _, _ = runs
    again = run_nightly(cfg, root, incremental=True)
    assert again.reason == "unchanged" and current_version(root) == second.version


def test_old_models_retrain_in_full(runs) -> None:
    cfg, root, _, _second, _, _ = runs
    stale = cfg.model_copy(
        update={"jobs": cfg.jobs.model_copy(update={"full_retrain_days": 1e-9, "k": 4})}
    )
    full = run_nightly(stale, root, incremental=True, force=True)  # figures of other data
    assert read_manifest(full.version)["incremental_from"] is None
