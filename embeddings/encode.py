"""Vectors for every item and for a set of users from a (sharded or plain) `TwoTower`.

Items and users without training examples are encoded with their id masked to OOV: their id rows
never received a gradient, so the content path alone places them (cold start).
"""

from __future__ import annotations

import numpy as np
import torch

from embeddings.id_dropout import mask_ids
from embeddings.model import TwoTower
from pipelines.batches import ItemTable, UserTable, inference_batches


@torch.no_grad()
def item_vectors(model: TwoTower, items: ItemTable, known: np.ndarray, *, batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """(n_items, dim) vectors for item indices 0..n_items-1 (row 0, the OOV item, included).

    `known[i]` says whether item i had training examples (its id row is trained)."""
    out = []
    for ids, kjt in inference_batches(items, np.arange(len(known)), batch_size):
        kjt = mask_ids(kjt, torch.from_numpy(~known[ids]))
        out.append(model.encode_items(kjt.to(device)).cpu())
    return torch.cat(out)


@torch.no_grad()
def user_vectors(model: TwoTower, users: UserTable, ids: np.ndarray, known: np.ndarray, *,
                 batch_size: int, device: torch.device) -> torch.Tensor:
    """(len(ids), dim) vectors of the users `ids` from their latest history and attributes."""
    out = []
    for sel, kjt in inference_batches(users, ids, batch_size):
        kjt = mask_ids(kjt, torch.from_numpy(~known[sel]))
        out.append(model.encode_users(kjt.to(device)).cpu())
    if not out:
        return torch.empty(0, model.cfg.dim)
    return torch.cat(out)
