"""The LightGBM learning-to-rank wrapper: query groups in, a text model out (no pickle).

`train_ranker` is plain `lightgbm.train` with the objective, the query groups and early
stopping on validation NDCG@k filled in, so that it gives what LightGBM gives with the same
parameters (tests check this on LightGBM's own lambdarank example).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from engine.kernels import run_places
from engine.rerank.config import RerankConfig
from engine.rerank.fallback import ORDER_FILE, Ranker, SourceOrder
from engine.rerank.trees import model_trees, predict_range, tree_range
from engine.rules import shortlist_size
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

MODEL_FILE = "model.txt"
FEATURES_FILE = "features.json"


@dataclass(frozen=True)
class RankData:
    """Rows grouped by query: rows of one query are contiguous, `group` holds the sizes."""

    x: np.ndarray  # (N, F) float
    y: np.ndarray  # (N,) graded relevance (0 = not relevant)
    group: np.ndarray  # (Q,) rows per query, sum = N

    def __post_init__(self) -> None:
        if int(self.group.sum()) != len(self.y) or len(self.x) != len(self.y):
            raise ValueError(
                f"query groups cover {int(self.group.sum())} rows, data has "
                f"{len(self.y)} labels and {len(self.x)} feature rows"
            )

    def dataset(self, names: list[str], reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            self.x,
            label=self.y,
            group=self.group,
            feature_name=names,
            reference=reference,
            free_raw_data=False,
        )


def train_ranker(
    train: RankData, names: list[str], cfg: RerankConfig, valid: RankData | None = None
) -> lgb.Booster:
    """A LightGBM ranker on `train` with the listwise objective `cfg.objective` (XE-NDCG,
    `rank_xendcg`, by default; `lambdarank` when configured), early-stopped on `valid`
    NDCG@`cfg.ndcg_at` when given (without `valid`, all `cfg.num_boost_round` trees)."""
    dtrain = train.dataset(names)
    sets = [dtrain]
    callbacks: list[Callable[[lgb.callback.CallbackEnv], None]] = []
    if valid is not None:
        sets = [valid.dataset(names, reference=dtrain)]
        callbacks = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
    return lgb.train(
        cfg.params(),
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=sets,
        callbacks=callbacks,
    )


def feature_matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """(N, F) float64 features `names` of a feature frame, nulls as NaN (LightGBM's missing)."""
    return frame.select([pl.col(n).cast(pl.Float64) for n in names]).to_numpy()


@dataclass(frozen=True)
class EarlyExit:
    """Score every row with the first `trees` trees; only each user's best `keep` rows by that
    partial score go through the remaining trees. A boosted model's later trees make ever
    smaller corrections, so the rows cut are those the whole model would rank low anyway."""

    trees: int
    keep: int


def early_exit_for(cfg: RerankConfig, k: int) -> EarlyExit | None:
    """`[rerank]`'s early exit for lists of `k` (None when it is off): never fewer rows kept
    than the rules see for such a list."""
    if not cfg.early_exit_trees:
        return None
    return EarlyExit(cfg.early_exit_trees, max(cfg.early_exit_keep, shortlist_size(k)))


def best_per_group(groups: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Row positions of the `n` highest `scores` of each group (ties: the earlier row)."""
    order = np.lexsort((-scores, groups))
    g = groups[order]
    return np.sort(order[run_places(np.asarray(g, np.int64)) < n])


def score_frame(
    booster: Ranker, frame: pl.DataFrame, names: list[str], early_exit: EarlyExit | None = None
) -> np.ndarray:
    """(N,) scores of the rows of a feature frame (rows of `user_idx`' candidates): the one
    scoring call of the batch lists, the evaluation and the online path. With `early_exit`,
    the rows cut after its first trees score -inf (ranked below every other row of their
    user); the others get the whole model's score. A `SourceOrder` scores by its column."""
    if isinstance(booster, SourceOrder):
        return booster.scores(frame)
    return score_matrix(
        booster, feature_matrix(frame, names), frame["user_idx"].to_numpy(), early_exit
    )


def score_matrix(
    booster: lgb.Booster, x: np.ndarray, users: np.ndarray, early_exit: EarlyExit | None = None
) -> np.ndarray:
    """`score_frame` on a feature matrix whose rows belong to `users`."""
    trees = model_trees(booster)
    if early_exit is None or early_exit.trees >= trees:
        return predict_range(booster, x, 0, trees)
    first = predict_range(booster, x, 0, early_exit.trees)
    kept = best_per_group(users, first, early_exit.keep)
    scores = np.full(len(first), -np.inf)
    scores[kept] = first[kept] + predict_range(booster, x[kept], early_exit.trees, trees)
    return scores


def warm_ranges(booster: Ranker, early_exit: EarlyExit | None) -> None:
    """Build the tree ranges `score_frame` reads, so that no request builds one."""
    if isinstance(booster, SourceOrder):
        return
    trees = model_trees(booster)
    tree_range(booster, 0, trees)
    if early_exit is not None and early_exit.trees < trees:
        tree_range(booster, 0, early_exit.trees)
        tree_range(booster, early_exit.trees, trees)


def save_ranker(booster: Ranker, folder: Path) -> Path:
    """model.txt (LightGBM's text format, best iteration) and features.json (names and gain
    importance, best first); or a signal's order, order.json."""
    folder = Path(folder)
    if isinstance(booster, SourceOrder):
        return booster.save(folder)
    with atomic_path(folder / MODEL_FILE) as tmp:
        booster.save_model(str(tmp), num_iteration=booster.best_iteration or None)
    gain = booster.feature_importance("gain", iteration=booster.best_iteration or None)
    importance = sorted(
        zip(booster.feature_name(), gain.tolist(), strict=True), key=lambda p: -p[1]
    )
    with atomic_path(folder / FEATURES_FILE) as tmp:
        tmp.write_text(
            json.dumps(
                {"features": booster.feature_name(), "importance_gain": dict(importance)}, indent=2
            )
        )
    return folder


def load_ranker(folder: Path) -> Ranker:
    """The booster a version holds, or the signal order it was published with instead."""
    if (Path(folder) / ORDER_FILE).is_file():
        return SourceOrder.load(folder)
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(path, "re-ranker model not found (train it first)")
    return lgb.Booster(model_file=str(path))
