"""Full-corpus recall@K of user and item vectors by exact search, for early stopping and for
comparing the two-tower model with simple baselines on the same held-out positives.

Items a user interacted with in the training window are excluded from the ranking and from the
truth (the task is finding new items). The corpus is the products (ads are ranked elsewhere).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from pipelines.batches import Jagged
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class HeldOut:
    """Users with held-out positives: what they went on to interact with, what they had seen,
    and which items the ranking may return."""

    users: np.ndarray  # (U,) user_idx
    truth: Jagged  # row k: held-out new items of users[k]
    seen: Jagged  # row k: items users[k] interacted with before
    corpus: np.ndarray  # (n_items,) bool, items that may be recommended

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, n: int, seed: int = 0) -> HeldOut:
        """At most `n` users, drawn without replacement (all when fewer)."""
        if n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return HeldOut(
            self.users[rows], _take(self.truth, rows), _take(self.seen, rows), self.corpus
        )

    def restrict(self, corpus: np.ndarray) -> HeldOut:
        """The same users scored against a smaller corpus (e.g. only new items); users left
        with no held-out item in it are dropped."""
        keep_vals = corpus[self.truth.values]
        lengths = (
            np.add.reduceat(keep_vals.astype(np.int64), self.truth.offsets[:-1])
            if len(self.truth.values)
            else np.zeros(len(self), np.int64)
        )
        lengths = np.where(np.diff(self.truth.offsets) == 0, 0, lengths)
        truth = Jagged(self.truth.values[keep_vals], np.concatenate([[0], np.cumsum(lengths)]))
        rows = np.flatnonzero(lengths > 0)
        return HeldOut(self.users[rows], _take(truth, rows), _take(self.seen, rows), corpus)


def _take(j: Jagged, rows: np.ndarray) -> Jagged:
    values, lengths = j.take(rows)
    return Jagged(values, np.concatenate([[0], np.cumsum(lengths)]))


def held_out(
    fs: FeatureSet, *, split: str = "valid", before: tuple[str, ...] = ("train",)
) -> HeldOut:
    """Positives of `split` that are new to the user given the positives of `before`."""
    inter = fs.interactions.select("user_idx", "item_idx", "split")
    seen = inter.filter(pl.col("split").is_in(list(before))).unique(["user_idx", "item_idx"])
    target = (
        inter.filter(pl.col("split") == split)
        .unique(["user_idx", "item_idx"])
        .join(seen, on=["user_idx", "item_idx"], how="anti")
    )
    products = fs.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    corpus = np.zeros(fs.vocabs.item.size, bool)
    corpus[products] = True
    target = target.filter(pl.col("item_idx").is_in(products))
    truth = target.group_by("user_idx").agg("item_idx").sort("user_idx")
    users = truth["user_idx"].to_numpy().astype(np.int64)
    seen_lists = pl.DataFrame({"user_idx": users}).join(
        seen.group_by("user_idx").agg("item_idx"), on="user_idx", how="left", maintain_order="left"
    )
    n = len(users)
    return HeldOut(
        users,
        Jagged.from_lists(truth["item_idx"], n, np.arange(n)),
        Jagged.from_lists(seen_lists["item_idx"], n, np.arange(n)),
        corpus,
    )


def hide_items(fs: FeatureSet, items: np.ndarray) -> FeatureSet:
    """The feature set as if `items` had appeared only after the training window: their
    training rows, popularity and places in histories removed. Training on it and scoring those
    items by content alone measures cold start on items whose true audience is known."""
    gone = items.tolist()
    train_row = pl.col("split") == "train"
    return dataclasses.replace(
        fs,
        interactions=fs.interactions.filter(~(train_row & pl.col("item_idx").is_in(gone))),
        popularity=fs.popularity.filter(~pl.col("item_idx").is_in(gone)),
        history=fs.history.with_columns(
            pl.col("history").list.eval(pl.element().filter(~pl.element().is_in(gone)))
        ),
    )


def recall_at_k(scores_fn, ho: HeldOut, k: int, *, chunk: int = 1024) -> float:
    """Mean over users of |top-k ∩ truth| / |truth|.

    `scores_fn(rows)` returns a (len(rows), n_items) float tensor of scores for the users at
    those rows of `ho`; items outside the corpus and seen items are never ranked.
    """
    if len(ho) == 0:
        return float("nan")
    blocked = torch.from_numpy(~ho.corpus)
    blocked[0] = True  # the OOV item
    total = 0.0
    for a in range(0, len(ho), chunk):
        rows = np.arange(a, min(a + chunk, len(ho)))
        scores = scores_fn(rows).float().clone()
        scores[:, blocked] = float("-inf")
        seen_v, seen_l = ho.seen.take(rows)
        scores[
            torch.from_numpy(np.repeat(np.arange(len(rows)), seen_l)), torch.from_numpy(seen_v)
        ] = float("-inf")
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
        tv, tl = ho.truth.take(rows)
        hit = np.zeros(scores.shape, bool)
        hit[np.repeat(np.arange(len(rows)), tl), tv] = True
        hits = np.take_along_axis(hit, top, axis=1).sum(1)
        total += float((hits / np.maximum(tl, 1)).sum())
    return total / len(ho)


def vector_scores(user_vecs: torch.Tensor, item_vecs: torch.Tensor):
    """`scores_fn` for recall_at_k from (U, D) user rows (aligned with the HeldOut users) and
    (n_items, D) item vectors."""
    return lambda rows: user_vecs[torch.from_numpy(rows)] @ item_vecs.T


def popularity_scores(fs: FeatureSet):
    """`scores_fn` of the popularity baseline: all-time count in the feature window."""
    pop = np.zeros(fs.vocabs.item.size, np.float32)
    pop[fs.popularity["item_idx"].to_numpy()] = fs.popularity["count_all"].to_numpy()
    t = torch.from_numpy(pop)
    return lambda rows: t.expand(len(rows), -1)


def random_scores(n_items: int, seed: int = 0):
    """`scores_fn` of a random ranking (the floor for cold-start comparisons)."""
    g = torch.Generator().manual_seed(seed)
    return lambda rows: torch.rand(len(rows), n_items, generator=g)
