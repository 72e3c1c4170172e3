"""Train the two-tower model from a config and write its checkpoint and vectors: the one
function behind `recengine train`, on one process or on each rank under `torchrun`.

Features are built as of the start of validation (train window only); training early-stops on
validation recall@K; rank 0 saves the best weights and exports the vectors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from embeddings.checkpoint import load_checkpoint, save_checkpoint
from embeddings.config import EmbeddingsConfig
from embeddings.export import export_vectors
from embeddings.progress import StepInfo
from embeddings.retrieval_eval import held_out, popularity_scores, recall_at_k
from embeddings.train import TrainResult, train_two_tower
from pipelines.dataset import build_features
from pipelines.io import atomic_path
from pipelines.progress import Report, silent

REPORT = "train.json"


@dataclass(frozen=True)
class FitSummary:
    """What `fit` measured (rank 0's view)."""

    world_size: int
    epochs: list[dict[str, float | int | None]]
    best_epoch: int
    recall_k: int
    recall: float | None
    popularity_recall: float | None
    tables_per_rank: dict[int, list[str]]
    out: str

    def save(self, folder: Path) -> None:
        with atomic_path(Path(folder) / REPORT) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))


def fit(
    cfg: EmbeddingsConfig,
    out: Path,
    *,
    report: Report = silent,
    progress: Callable[[StepInfo], None] = lambda _: None,
) -> FitSummary | None:
    """Build features, train with early stopping, save `model.pt`, `model.json`,
    `items.parquet`, `users.parquet` and `train.json` into `out`. Returns the summary on
    rank 0 and None on the other ranks."""
    report("features")
    fs = build_features(cfg, window="train")
    validation = held_out(fs)
    report("train")
    result: TrainResult = train_two_tower(fs, cfg, validation=validation, progress=progress)
    if result.rank != 0:  # the process group is closed by now: the result knows the rank
        return None
    report("export")
    save_checkpoint(out, result.state_dict, result.sizes, cfg.model)
    export_vectors(
        load_checkpoint(out),
        fs,
        known_items=result.known_items,
        known_users=result.known_users,
        history_length=cfg.features.history_length,
        folder=out,
    )
    sub = validation.subset(cfg.train.eval_users, seed=cfg.train.seed)
    summary = FitSummary(
        world_size=result.world_size,
        epochs=[asdict(e) for e in result.epochs],
        best_epoch=result.best_epoch,
        recall_k=cfg.train.recall_k,
        recall=result.best_recall,
        popularity_recall=recall_at_k(popularity_scores(fs), sub, cfg.train.recall_k),
        tables_per_rank=result.tables_per_rank,
        out=str(out),
    )
    summary.save(out)
    return summary
