"""When the re-ranker can't be trusted: the order of one of its own signals instead.

A boosted ranker fitted on a few hundred lists learns noise, and one that scores below a
single candidate signal on its held-out users (the two-tower score, EASE, item-kNN, what
follows the last items) would publish worse lists than that signal alone. Then the job
publishes the best such order on the held-out lists instead, and says why
(`[rerank] min_lists`). The order is stored as `order.json` beside where the LightGBM
model would be, and everything that scores lists takes either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from engine.rerank.ndcg import mean_ndcg
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

ORDER_FILE = "order.json"
ORDERS = ("two_tower", "ease_score", "knn_score", "next_score")
"""Feature columns that score every candidate and can order a list on their own."""


@dataclass(frozen=True)
class SourceOrder:
    """Lists ordered by one feature column, highest first (a missing value last)."""

    column: str
    reason: str

    def scores(self, frame: pl.DataFrame) -> np.ndarray:
        return frame[self.column].cast(pl.Float64).fill_null(-np.inf).fill_nan(-np.inf).to_numpy()

    def feature_name(self) -> list[str]:
        return [self.column]

    def save(self, folder: Path) -> Path:
        with atomic_path(Path(folder) / ORDER_FILE) as tmp:
            tmp.write_text(json.dumps({"order": self.column, "reason": self.reason}, indent=2))
        return Path(folder)

    @classmethod
    def load(cls, folder: Path) -> SourceOrder:
        path = Path(folder) / ORDER_FILE
        try:
            doc = json.loads(path.read_text())
            return cls(str(doc["order"]), str(doc["reason"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(path, f"not a list order: {err}") from err


Ranker = lgb.Booster | SourceOrder
"""What orders a user's candidates: the fitted LightGBM model or, where it could not be
trusted, one signal's order."""


def order_ndcgs(frame: pl.DataFrame, ndcg_at: int) -> dict[str, float]:
    """Mean NDCG@`ndcg_at` of each `ORDERS` column present in labelled lists `frame`."""
    if frame.is_empty():
        return {}
    frame = (
        frame.sort("cutoff", "user_idx") if "cutoff" in frame.columns else frame.sort("user_idx")
    )
    keys = ["cutoff", "user_idx"] if "cutoff" in frame.columns else ["user_idx"]
    group = frame.group_by(keys, maintain_order=True).len()["len"].to_numpy()
    y = frame["label"].to_numpy().astype(np.float64)
    return {
        c: mean_ndcg(y, SourceOrder(c, "").scores(frame), group, ndcg_at)
        for c in ORDERS
        if c in frame.columns
    }


def best_order(ndcgs: dict[str, float]) -> str:
    """The column of the highest NDCG (the two-tower score when there is nothing to compare)."""
    return max(ndcgs, key=lambda c: (ndcgs[c], c == "two_tower")) if ndcgs else "two_tower"
