"""Export user and item vectors to Parquet, keyed by the original ids.

Every item gets a vector; items without training examples get their content-only vector (id
masked to OOV), which is also what a brand-new item gets. Every user of the users table gets a
vector from the latest history and attributes; users without training examples are placed by
content alone. A `content_only` column says which is which; items also carry their
`content_vector` (id masked for every item), which the content-neighbour candidates use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from pipelines.dataset import FeatureSet
from pipelines.errors import ArtifactError
from pipelines.io import write_parquet

if TYPE_CHECKING:  # the model imports TorchRec, which reading vectors back never needs
    from embeddings.model import TwoTower

ITEMS = "items.parquet"
USERS = "users.parquet"


@dataclass(frozen=True)
class Vectors:
    """Ids, indices and an (n, dim) float32 matrix of unit vectors, row-aligned."""

    ids: pl.Series
    index: np.ndarray
    matrix: np.ndarray
    content_only: np.ndarray
    content: np.ndarray | None = None  # items: content-only vectors of every item

    def to_frame(self, id_col: str) -> pl.DataFrame:
        df = pl.DataFrame(
            {
                id_col: self.ids,
                id_col.replace("_id", "_idx"): self.index,
                "content_only": self.content_only,
                "vector": pl.Series(self.matrix.astype(np.float32)),
            }
        )
        if self.content is not None:
            df = df.with_columns(content_vector=pl.Series(self.content.astype(np.float32)))
        return df


def export_vectors(
    model: TwoTower,
    fs: FeatureSet,
    *,
    known_items: np.ndarray,
    known_users: np.ndarray,
    history_length: int,
    folder: Path,
    batch_size: int = 4096,
    device: torch.device | None = None,
) -> tuple[Vectors, Vectors]:
    """Write `items.parquet` and `users.parquet` into `folder`; return both vector sets."""
    from embeddings.encode import all_vectors

    v = all_vectors(
        model,
        fs,
        known_items=known_items,
        known_users=known_users,
        history_length=history_length,
        batch_size=batch_size,
        device=device,
    )
    item_idx = fs.stored("items")["item_idx"].to_numpy()  # the file keeps its Int32 item_idx
    items = Vectors(
        fs.items["item_id"],
        item_idx,
        v.items[item_idx],
        ~known_items[item_idx],
        v.content[item_idx],
    )
    user_idx = fs.users["user_idx"].to_numpy().astype(np.int64)
    users = Vectors(fs.users["user_id"], user_idx, v.users[user_idx], ~known_users[user_idx])
    write_parquet(
        items.to_frame("item_id").with_columns(kind=fs.items["kind"]), Path(folder) / ITEMS
    )
    write_parquet(users.to_frame("user_id"), Path(folder) / USERS)
    return items, users


def load_vectors(path: Path) -> Vectors:
    """Read an exported `items.parquet` or `users.parquet` back."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "vector file not found (export the model first)")
    df = pl.read_parquet(path)
    id_col = next((c for c in ("item_id", "user_id") if c in df.columns), None)
    if id_col is None or "vector" not in df.columns:
        raise ArtifactError(path, "not a recengine vector file (item_id or user_id, vector)")
    content = (
        df["content_vector"].to_numpy().astype(np.float32)
        if "content_vector" in df.columns
        else None
    )
    return Vectors(
        df[id_col],
        df[id_col.replace("_id", "_idx")].to_numpy(),
        df["vector"].to_numpy().astype(np.float32),
        df["content_only"].to_numpy(),
        content,
    )
