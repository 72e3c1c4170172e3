"""The retrieval stack for one point in time: a trained two-tower model applied to the feature
set as of that time, its vectors, the item index, and the candidate context built on them."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from embeddings.encode import all_vectors
from embeddings.model import TwoTower
from embeddings.retrieval_eval import held_out
from embeddings.train import TrainResult, train_two_tower
from engine.candidates import ModelContext
from engine.config import EngineConfig
from engine.index import build_index
from pipelines.dataset import FeatureSet, Window, build_features


@dataclass(frozen=True)
class TrainedRetrieval:
    """A two-tower model and what it was trained on."""

    model: TwoTower
    result: TrainResult


def train_retrieval(
    cfg: EngineConfig,
    *,
    window: Window = "train",
    epochs: int | None = None,
    fs: FeatureSet | None = None,
) -> TrainedRetrieval:
    """Train on the positives of `window`. Without `epochs`, "train" early-stops on the
    validation window; with `epochs` (which an early-stopped run chose) it runs that many and
    never looks at the validation window, as must a model whose scores become features
    labelled by that window. "valid" (train + valid, the refit for scoring the test window)
    needs `epochs`, and so does "all" (every interaction: the fit a published version serves)."""
    if window != "train" and epochs is None:
        raise ValueError(f"training on the {window!r} window needs a fixed epoch count")
    if fs is None:  # `fs`, when given, is the feature set of `window` (built by the caller)
        fs = build_features(cfg, window=window)
    splits = {"train": ("train",), "valid": ("train", "valid"), "all": ("train", "valid", "test")}[
        window
    ]
    validation = held_out(fs) if epochs is None else None
    if epochs is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": epochs})})
    result = train_two_tower(fs, cfg, validation=validation, splits=splits)
    model = TwoTower(result.sizes, cfg.model)
    model.load_state_dict(result.state_dict)
    return TrainedRetrieval(model.eval(), result)


def retrieval_context(
    cfg: EngineConfig, fs: FeatureSet, trained: TrainedRetrieval
) -> tuple[ModelContext, dict[str, float]]:
    """Vectors of every user and item as of `fs` (items and users the model never trained on
    by content), the product index tuned on the user vectors, and the candidate context."""
    v = all_vectors(
        trained.model,
        fs,
        known_items=trained.result.known_items,
        known_users=trained.result.known_users,
        history_length=cfg.features.history_length,
    )
    iv, cv, uv = v.items, v.content, v.users
    products = fs.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    index, figures = build_index(iv[products], products, cfg.index, queries=uv[1:])
    ctx = ModelContext.of(
        fs, cfg.candidates, user_vectors=uv, index=index, content_vectors=cv, item_vectors=iv
    )
    return ctx, figures
