"""Paths: a config's relative paths resolve against the config's folder, not the working
directory; and a nightly run writes nothing outside its artifacts root, even when ids in the
data look like paths."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.config import EngineConfig
from engine.jobs.artifacts import current_version, verify
from pipelines.config import load_config
from tests.conftest import small_job

runner = CliRunner()


def tree(folder: Path, *, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` outside `skip`, with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and not p.is_relative_to(skip)
    }


def test_relative_paths_resolve_against_the_config_folder(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_job(small_data, tmp_path / "shop" / "conf")
    data = config.parent
    (tmp_path / "shop" / "tables").mkdir()
    for name in ("interactions", "items", "users"):
        (data / f"{name}.parquet").rename(tmp_path / "shop" / "tables" / f"{name}.parquet")
    text = config.read_text().replace('"interactions.parquet"', '"../tables/interactions.parquet"')
    text = text.replace('"items.parquet"', '"../tables/items.parquet"')
    text = text.replace('"users.parquet"', '"../tables/users.parquet"')
    config.write_text(text + '\n[artifacts]\nroot = "../out/artifacts"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "shop" / "conf" / "config.toml", EngineConfig)
    assert cfg.data.items == tmp_path / "shop" / "tables" / "items.parquet"
    assert cfg.artifacts.root == tmp_path / "shop" / "out" / "artifacts"
    # user ids and item ids that look like paths must not steer any write
    first_user = str(pl.read_parquet(cfg.data.users)["user_id"][0])
    items = pl.read_parquet(cfg.data.items)
    first_item = items.filter(pl.col("kind") == "product")["item_id"][0]
    escape = tmp_path / "escape"  # where either id would lead, from any folder
    path_like = {"user": "../" * 40 + str(escape.relative_to("/")), "item": str(escape)}
    rename = {
        "user_id": {first_user: path_like["user"]},
        "item_id": {first_item: path_like["item"]},
    }
    for name in ("interactions", "items", "users"):
        path = getattr(cfg.data, name)
        frame = pl.read_parquet(path)
        frame.with_columns(
            pl.col(c).cast(pl.String).replace(m) for c, m in rename.items() if c in frame.columns
        ).write_parquet(path)
    before = tree(tmp_path, skip=cfg.artifacts.root)
    result = runner.invoke(app, ["nightly", "--config", "../shop/conf/config.toml"])
    assert result.exit_code == 0, result.output
    assert tree(tmp_path, skip=cfg.artifacts.root) == before  # nothing written elsewhere
    assert not list(elsewhere.iterdir()) and not escape.exists()
    live = current_version(cfg.artifacts.root)
    assert live is not None and live.is_relative_to(cfg.artifacts.root)
    files = verify(live)["files"]
    assert all(not Path(f).is_absolute() and ".." not in Path(f).parts for f in files)
    assert all((live / f).resolve().is_relative_to(live) for f in files)
    lists = pl.read_parquet(live / "recs" / "kind=product" / "*.parquet")
    assert path_like["user"] in lists["user_id"].to_list()  # the odd ids are served as data
    assert path_like["item"] in pl.read_parquet(live / "vocab" / "item.parquet")["value"].to_list()
