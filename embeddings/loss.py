"""In-batch sampled softmax with logQ correction (Yi et al., RecSys 2019), plus optional
uniformly sampled extra negatives (mixed negative sampling, Yang et al., WWW 2020).

Every other item of the batch is a negative for an example. Items enter a batch in proportion to
their frequency, so popular items are over-represented as negatives; subtracting log of each
candidate's expected count in the negative set (logQ) makes the sampled softmax an unbiased
estimate of the full softmax. A candidate that is the same item as the example's positive is
masked out rather than counted as a negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sampled_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    item_idx: torch.Tensor,
    item_logq: torch.Tensor,
    *,
    temperature: float,
    weight: torch.Tensor | None = None,
    neg_item: torch.Tensor | None = None,
    neg_idx: torch.Tensor | None = None,
    n_items: int | None = None,
) -> torch.Tensor:
    """Weighted mean cross-entropy of each user against its own item among the candidates.

    Args:
        user: (B, D) user vectors; item: (B, D) vectors of each example's positive item.
        item_idx: (B,) item indices, to mask in-batch duplicates of the positive.
        item_logq: (B,) log of each item's sampling probability per example (its frequency share).
        weight: (B,) example weights (event strength); None for equal weights.
        neg_item, neg_idx: (M, D) and (M,) uniformly drawn extra negatives, if any.
        n_items: corpus size the extra negatives were drawn from (their q is M / n_items).
    """
    b = user.shape[0]
    logits = user @ item.T / temperature - (item_logq + math.log(b))[None, :]
    same = item_idx[None, :] == item_idx[:, None]
    eye = torch.eye(b, dtype=torch.bool, device=user.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if neg_item is not None and neg_idx is not None and len(neg_idx):
        assert n_items is not None, "n_items is needed to correct the random negatives"
        neg = user @ neg_item.T / temperature - math.log(len(neg_idx) / n_items)
        neg = neg.masked_fill(neg_idx[None, :] == item_idx[:, None], float("-inf"))
        logits = torch.cat([logits, neg], dim=1)
    target = torch.arange(b, device=user.device)
    loss = F.cross_entropy(logits, target, reduction="none")
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum()
