"""Embedding a user at request time from a history and attributes, without the training stack.

`UserEncoder` holds the user tower's three tables and its MLP as plain tensors taken from a
checkpoint, and computes the same vector as `TwoTower.encode_users` with
`torch.nn.functional.embedding_bag`: no TorchRec, no process group, no sharding. Serving uses it
for anonymous and new users and for users whose history changed since the nightly run.

Example:
    >>> enc = UserEncoder.from_state_dict(load_state_dict(folder))
    >>> enc.encode([[12, 40, 7]], [[3, 9]])           # (1, dim), unit norm
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PREFIX = "user_ebc.embedding_bags."
_MLP = re.compile(r"user_mlp\.(\d+)\.(weight|bias)")


@dataclass(frozen=True)
class UserEncoder:
    """The user tower as plain tensors."""

    user_id: torch.Tensor  # (n_users, E)
    history: torch.Tensor  # (n_items, E)
    user_attr: torch.Tensor  # (n_attr_tokens, E)
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (weight, bias) of each Linear

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> UserEncoder:
        found: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in sd.items():
            m = _MLP.fullmatch(key)
            if m:
                found.setdefault(int(m.group(1)), {})[m.group(2)] = value
        layers = tuple((found[i]["weight"], found[i]["bias"]) for i in sorted(found))
        return cls(
            user_id=sd[PREFIX + "user_id.weight"],
            history=sd[PREFIX + "history.weight"],
            user_attr=sd[PREFIX + "user_attr.weight"],
            layers=layers,
        )

    @property
    def dim(self) -> int:
        return int(self.layers[-1][0].shape[0])

    @torch.no_grad()
    def encode(
        self,
        histories: Sequence[Sequence[int]],
        attributes: Sequence[Sequence[int]],
        user_idx: Sequence[int] | None = None,
    ) -> np.ndarray:
        """(B, dim) float32 unit vectors.

        Args:
            histories: item indices per user, oldest first (already cut to the history length).
            attributes: attribute token indices per user.
            user_idx: the users' own indices; None (or 0) for users the model has not trained
                on, who are placed by history and attributes alone.
        """
        b = len(histories)
        ids = torch.as_tensor(list(user_idx) if user_idx is not None else [0] * b, dtype=torch.long)
        x = torch.cat(
            [
                F.embedding(ids, self.user_id),
                _mean_bag(self.history, histories),
                _mean_bag(self.user_attr, attributes),
            ],
            dim=1,
        )
        for i, (w, bias) in enumerate(self.layers):
            x = F.linear(x, w, bias)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return F.normalize(x, dim=-1).numpy()


def _mean_bag(table: torch.Tensor, bags: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean of each bag's rows; an empty bag gives zeros (as TorchRec's MEAN pooling does)."""
    lengths = [len(bag) for bag in bags]
    values = torch.as_tensor([v for bag in bags for v in bag], dtype=torch.long)
    offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), dtype=torch.long)
    return F.embedding_bag(values, table, offsets, mode="mean")
