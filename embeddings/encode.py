"""Vectors for every item and for a set of users from a (sharded or plain) `TwoTower`.

Items and users without training examples are encoded with their id masked to OOV: their id rows
never received a gradient, so the content path alone places them (cold start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embeddings.id_dropout import mask_ids
from embeddings.model import TwoTower
from pipelines.batches import ItemTable, UserTable, inference_batches
from pipelines.dataset import FeatureSet


@torch.no_grad()
def item_vectors(
    model: TwoTower, items: ItemTable, known: np.ndarray, *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """(n_items, dim) vectors for item indices 0..n_items-1 (row 0, the OOV item, included).

    `known[i]` says whether item i had training examples (its id row is trained)."""
    out = []
    for ids, kjt in inference_batches(items, np.arange(len(known)), batch_size):
        kjt = mask_ids(kjt, torch.from_numpy(~known[ids]))
        out.append(model.encode_items(kjt.to(device)).cpu())
    return torch.cat(out)


@torch.no_grad()
def user_vectors(
    model: TwoTower,
    users: UserTable,
    ids: np.ndarray,
    known: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """(len(ids), dim) vectors of the users `ids` from their latest history and attributes."""
    out = []
    for sel, kjt in inference_batches(users, ids, batch_size):
        kjt = mask_ids(kjt, torch.from_numpy(~known[sel]))
        out.append(model.encode_users(kjt.to(device)).cpu())
    if not out:
        return torch.empty(0, model.cfg.dim)
    return torch.cat(out)


@dataclass(frozen=True)
class AllVectors:
    """Every item's and user's vectors as of one feature set, rows indexed by item_idx /
    user_idx (row 0 is the OOV item / user)."""

    items: np.ndarray  # (n_items, D): content-only for items without training examples
    content: np.ndarray  # (n_items, D): content-only for every item
    users: np.ndarray  # (n_users, D): from the latest history and attributes


def all_vectors(
    model: TwoTower,
    fs: FeatureSet,
    *,
    known_items: np.ndarray,
    known_users: np.ndarray,
    history_length: int,
    batch_size: int = 4096,
    device: torch.device | None = None,
) -> AllVectors:
    """Item, content-only item and user vectors of everything in `fs` (export and the
    retrieval stack both start here)."""
    dev = device or torch.device("cpu")
    model.eval()
    table = ItemTable.from_features(fs)
    items = item_vectors(model, table, known_items, batch_size=batch_size, device=dev).numpy()
    content = item_vectors(
        model, table, np.zeros_like(known_items), batch_size=batch_size, device=dev
    ).numpy()
    users = user_vectors(
        model,
        UserTable.from_features(fs, history_length=history_length),
        np.arange(fs.vocabs.user.size),
        known_users,
        batch_size=batch_size,
        device=dev,
    ).numpy()
    return AllVectors(items, content, users)
