"""Hiding what identifies a user or an item, so that only content speaks: at random in training
(id dropout), and always for users and items the model never trained on (their id rows are
untrained noise).

What is hidden are the single-valued features that only exist once an entity has a past: the
user id; the item id and the item's popularity bucket. They are set to row 0 (OOV), which is
also what a brand-new user or item has, so training teaches row 0 to mean "unknown".
"""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipelines.encode import OOV

IDENTIFYING = ("user_id", "item_id", "item_popularity")


def mask_ids(
    kjt: KeyedJaggedTensor, mask: torch.Tensor, keys: tuple[str, ...] = IDENTIFYING
) -> KeyedJaggedTensor:
    """A copy of `kjt` whose identifying keys are OOV for the examples where `mask` (B,) is
    True. Each such key must have exactly one value per example."""
    b = kjt.stride()
    lengths = kjt.lengths()
    values = kjt.values().clone()
    offsets = kjt.offset_per_key()
    length_offsets = [b * k for k in range(len(kjt.keys()) + 1)]
    mask = mask.to(values.device)
    for k, key in enumerate(kjt.keys()):
        if key not in keys:
            continue
        assert bool((lengths[length_offsets[k] : length_offsets[k + 1]] == 1).all()), (
            f"{key} must have one value per example"
        )
        seg = slice(offsets[k], offsets[k + 1])
        values[seg] = torch.where(mask, torch.full_like(values[seg], OOV), values[seg])
    return KeyedJaggedTensor(keys=kjt.keys(), values=values, lengths=lengths)


def drop_ids(kjt: KeyedJaggedTensor, rate: float, generator: torch.Generator) -> KeyedJaggedTensor:
    """Id dropout: each example's identifying features become OOV with probability `rate`."""
    if rate <= 0:
        return kjt
    return mask_ids(kjt, torch.rand(kjt.stride(), generator=generator) < rate)
