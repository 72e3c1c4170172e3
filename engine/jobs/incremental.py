"""Incremental stages: new items and users join a version without retraining.

The live version's two-tower model, re-ranker and pCTR model are reused as they are. The
vocabularies are the live ones with the new user and item ids appended, so every trained index
keeps its meaning; new items and users are placed by the content path (their ids, which the
model never saw, are masked), new items in histories are left out of the user tower's history
bag (its table has no row for them), and the index and every list are rebuilt with them.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.checkpoint import load_checkpoint, load_meta
from embeddings.export import ITEMS, USERS, export_vectors
from engine.jobs.artifacts import read_manifest
from engine.jobs.stages import Figures, Run, evaluation, index, recs, validate
from pipelines.dataset import Vocabularies, build_features
from pipelines.validate import validate_tables


def _base(run: Run) -> Path:
    if run.base is None:
        raise ValueError("an incremental run needs a live version to build on")
    return run.base


def features(run: Run) -> Figures:
    """Features with the live vocabularies, new user and item ids appended."""
    base = _base(run)
    tables = validate_tables(run.cfg.data, run.cfg.columns)
    old = Vocabularies.load(base / "vocab")
    vocabs = dataclasses.replace(
        old,
        user=old.user.extend(tables.users["user_id"]),
        item=old.item.extend(tables.items["item_id"]),
    )
    fs = build_features(run.cfg, window="all", tables=tables, vocabs=vocabs)
    fs.save(run.dir)
    return {
        "as_of": fs.as_of.isoformat(),
        "positives": fs.interactions.height,
        "new_users": vocabs.user.size - old.user.size,
        "new_items": vocabs.item.size - old.item.size,
    }


def _known(path: Path, n: int, limit: int) -> np.ndarray:
    """(n,) bool: trained rows of the base version's vectors (indices below `limit`)."""
    df = pl.read_parquet(
        path,
        columns=[
            c for c in pl.read_parquet_schema(path) if c.endswith("_idx") or c == "content_only"
        ],
    )
    idx = df.select(pl.col("^.*_idx$")).to_series().to_numpy()
    known = np.zeros(n, bool)
    ok = idx < limit
    known[idx[ok]] = ~df["content_only"].to_numpy()[ok]
    return known


def encode(run: Run) -> Figures:
    """Vectors of every item and user from the live model, which is copied unchanged."""
    base = _base(run)
    out = run.dir / "embeddings"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "model.json"):
        shutil.copy2(base / "embeddings" / name, out / name)
    sizes, _ = load_meta(out)
    fs = run.features()
    history = fs.history.with_columns(
        pl.col("history").list.eval(pl.element().filter(pl.element() < sizes.item))
    )
    known_items = _known(base / "embeddings" / ITEMS, fs.vocabs.item.size, sizes.item)
    known_users = _known(base / "embeddings" / USERS, fs.vocabs.user.size, sizes.user)
    export_vectors(
        load_checkpoint(out),
        dataclasses.replace(fs, history=history),
        known_items=known_items,
        known_users=known_users,
        history_length=run.cfg.features.history_length,
        folder=out,
    )
    figures = dict(run.base_figures.get("train", {}))
    return figures | {"incremental_from": base.name}


def _reuse(folder: str, stage: str) -> Callable[[Run], Figures]:
    """A stage that copies the base version's `folder` and its figures of `stage`."""

    def reuse(run: Run) -> Figures:
        src = _base(run) / folder
        if src.is_dir():
            shutil.copytree(src, run.dir / folder, dirs_exist_ok=True)
        return dict(run.base_figures.get(stage, {}))

    reuse.__name__ = f"reuse_{folder}"
    return reuse


STAGES = [
    ("validate", validate),
    ("features", features),
    ("train", encode),
    ("index", index),
    ("rerank", _reuse("rerank", "rerank")),
    ("ads", _reuse("ads", "ads")),
    ("recs", recs),
    ("evaluation", evaluation),
]
"""The incremental run's stages: the same names, so records and the gate read alike."""


def base_figures(base: Path) -> dict[str, Figures]:
    """What the base version's stages measured (its manifest's metrics)."""
    metrics = read_manifest(base).get("metrics")
    return metrics if isinstance(metrics, dict) else {}
