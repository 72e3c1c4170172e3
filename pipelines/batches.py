"""Feature tables -> TorchRec `KeyedJaggedTensor` batches for training and inference.

The contract with the embeddings layer:

* user side, keys `USER_KEYS`: ``user_id`` (1 value), ``user_history`` (the items the user
  interacted with *before* the example, at most `history_length`), ``user_attrs`` (attribute
  tokens);
* item side, keys `ITEM_KEYS`: ``item_id`` (1), ``item_category`` (path prefixes),
  ``item_brand`` (1), ``item_title`` (title and tag tokens), ``item_price`` (1 bucket),
  ``item_popularity`` (1: log2 bucket of the item's interaction count in the feature window,
  0 for an item nobody has touched yet).

All values are vocabulary indices (0 = OOV). Rows are stored as flat numpy arrays with offsets,
so a batch is a few vectorised gathers, not a Python loop per example.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipelines.dataset import FeatureSet

USER_KEYS = ("user_id", "user_history", "user_attrs")
ITEM_KEYS = (
    "item_id",
    "item_category",
    "item_brand",
    "item_title",
    "item_price",
    "item_popularity",
)
POPULARITY_BUCKETS = 24  # log2 buckets 0..23: counts up to ~8M


@dataclass(frozen=True)
class Jagged:
    """Variable-length rows as flat `values` and `offsets` (row r is values[off[r]:off[r+1]])."""

    values: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (R + 1,) int64

    @classmethod
    def from_lists(
        cls, s: pl.Series, n_rows: int | None = None, rows: np.ndarray | None = None
    ) -> Jagged:
        """From a list column; with `rows`, row k of `s` lands at row `rows[k]` of `n_rows`."""
        lengths = s.list.len().fill_null(0).to_numpy().astype(np.int64)
        values = s.explode().drop_nulls().to_numpy().astype(np.int64)
        if rows is not None:
            full = np.zeros(n_rows or 0, np.int64)
            full[rows] = lengths
            order = np.argsort(rows, kind="stable")
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            values = (
                np.concatenate([values[starts[k] : starts[k] + lengths[k]] for k in order])
                if len(order)
                else values
            )
            lengths = full
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]))

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gather rows: (values, lengths)."""
        return gather_ranges(self.values, self.offsets[rows], self.offsets[rows + 1])


def gather_ranges(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate values[starts[k]:ends[k]] for all k without a Python loop."""
    lengths = (ends - starts).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return values[:0], lengths
    row_start = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return values[row_start + np.arange(total)], lengths


def _kjt(keys: tuple[str, ...], parts: list[tuple[np.ndarray, np.ndarray]]) -> KeyedJaggedTensor:
    values = np.concatenate([p[0] for p in parts])
    lengths = np.concatenate([p[1] for p in parts])
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=torch.from_numpy(values.astype(np.int64)),
        lengths=torch.from_numpy(lengths.astype(np.int32)),
    )


def _single(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ids.astype(np.int64), np.ones(len(ids), np.int64)


@dataclass(frozen=True)
class ItemTable:
    """Item-side features indexed by item_idx (row 0 = OOV item with no features)."""

    category: Jagged
    title: Jagged
    brand: np.ndarray
    price: np.ndarray
    popularity: np.ndarray

    @classmethod
    def from_features(cls, fs: FeatureSet) -> ItemTable:
        it = fs.items
        n = fs.vocabs.item.size
        rows = it["item_idx"].to_numpy()
        brand, price = np.zeros(n, np.int64), np.zeros(n, np.int64)
        brand[rows], price[rows] = it["brand_idx"].to_numpy(), it["price_bucket"].to_numpy()
        counts = np.zeros(n, np.int64)
        counts[fs.popularity["item_idx"].to_numpy()] = fs.popularity["count_all"].to_numpy()
        popularity = np.minimum(np.ceil(np.log2(counts + 1)), POPULARITY_BUCKETS - 1)
        return cls(
            category=Jagged.from_lists(it["category_tok"], n, rows),
            title=Jagged.from_lists(it["title_tok"], n, rows),
            brand=brand,
            price=price,
            popularity=popularity.astype(np.int64),
        )

    def kjt(self, items: np.ndarray) -> KeyedJaggedTensor:
        """Item-side KJT for a batch of item indices (keys `ITEM_KEYS`, batch size len(items))."""
        return _kjt(
            ITEM_KEYS,
            [
                _single(items),
                self.category.take(items),
                _single(self.brand[items]),
                self.title.take(items),
                _single(self.price[items]),
                _single(self.popularity[items]),
            ],
        )


@dataclass(frozen=True)
class UserTable:
    """User-side features indexed by user_idx: attributes and the full positive sequence."""

    attrs: Jagged
    sequence: Jagged  # every positive item of the user, time-ordered (for history-before-t)
    history: Jagged  # the last `history_length` distinct items as of the feature set's time
    history_length: int

    @classmethod
    def from_features(
        cls, fs: FeatureSet, *, history_length: int, sequences: pl.DataFrame | None = None
    ) -> UserTable:
        """Tables indexed by user_idx. Without `sequences` (user_idx, items) the table serves
        inference only: the latest history stands in for the sequence."""
        n = fs.vocabs.user.size
        history = Jagged.from_lists(fs.history["history"], n, fs.history["user_idx"].to_numpy())
        sequence = (
            history
            if sequences is None
            else Jagged.from_lists(sequences["items"], n, sequences["user_idx"].to_numpy())
        )
        return cls(
            attrs=Jagged.from_lists(fs.users["attr_tok"], n, fs.users["user_idx"].to_numpy()),
            sequence=sequence,
            history=history,
            history_length=history_length,
        )

    def kjt(self, users: np.ndarray, positions: np.ndarray | None = None) -> KeyedJaggedTensor:
        """User-side KJT. With `positions`, the history of example k is the user's sequence
        before position positions[k] (no leakage of the item being predicted); without, it is
        the history as of the feature set's time (inference)."""
        if positions is None:
            off = self.history.offsets
            hist = gather_ranges(
                self.history.values,
                np.maximum(off[users], off[users + 1] - self.history_length),
                off[users + 1],
            )
        else:
            start = self.sequence.offsets[users]
            hist = gather_ranges(
                self.sequence.values,
                start + np.maximum(positions - self.history_length, 0),
                start + positions,
            )
        return _kjt(USER_KEYS, [_single(users), hist, self.attrs.take(users)])


class TrainingBatch(NamedTuple):
    """One training batch: B (user, positive item) pairs."""

    user: KeyedJaggedTensor
    item: KeyedJaggedTensor
    item_idx: torch.Tensor  # (B,) int64
    item_logq: torch.Tensor  # (B,) float32, log of the item's sampling probability in batches
    weight: torch.Tensor  # (B,) float32, event weight


@dataclass(frozen=True)
class TrainingExamples:
    """(user, position in sequence, item, weight) for every positive of a split."""

    users: UserTable
    items: ItemTable
    user_idx: np.ndarray
    position: np.ndarray
    item_idx: np.ndarray
    weight: np.ndarray
    item_logq: np.ndarray  # (n_items,) log frequency of each item among the examples

    def __len__(self) -> int:
        return len(self.user_idx)

    def batches(
        self, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[TrainingBatch]:
        """Batches of `batch_size` examples for process `rank` of `world`.

        All processes draw the same permutation; each global step of ``batch_size * world``
        examples is cut into equal parts, one per rank (a short last step is trimmed to a
        multiple of `world`), so every rank takes the same number of equal-sized steps, as
        sharded embedding lookups need.
        """
        order = (
            np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        )
        for a in range(0, len(order), batch_size * world):
            step = order[a : a + batch_size * world]
            part = len(step) // world
            if part == 0:
                return
            sel = step[rank * part : (rank + 1) * part]
            items = self.item_idx[sel]
            yield TrainingBatch(
                user=self.users.kjt(self.user_idx[sel], self.position[sel]),
                item=self.items.kjt(items),
                item_idx=torch.from_numpy(items.astype(np.int64)),
                item_logq=torch.from_numpy(self.item_logq[items].astype(np.float32)),
                weight=torch.from_numpy(self.weight[sel].astype(np.float32)),
            )


def training_examples(
    fs: FeatureSet,
    *,
    history_length: int,
    splits: tuple[str, ...] = ("train",),
    distinct: bool = False,
) -> TrainingExamples:
    """Examples from the positives of `splits`; each carries its position in the user's
    time-ordered sequence so its history holds only earlier items.

    With `distinct`, each (user, item) pair is one example at its first interaction, weighted
    by its strongest event: the examples of retrieval, whose task is finding items new to the
    user (returning to known items is a separate, simpler signal).
    """
    rows = fs.interactions.filter(pl.col("split").is_in(list(splits))).sort(
        "user_idx", "ts", "item_idx", maintain_order=True
    )
    if distinct:
        pos = (
            rows.group_by("user_idx", "item_idx", maintain_order=True)
            .agg(pl.col("ts").first(), pl.col("weight").max())
            .sort("user_idx", "ts", "item_idx", maintain_order=True)
        )
    else:
        # Back-to-back events on one item (view -> add_to_cart -> purchase) are one example
        # with the strongest event's weight, so the funnel does not repeat items in histories.
        new_run = (pl.col("item_idx") != pl.col("item_idx").shift(1).over("user_idx")).fill_null(
            True
        )
        pos = (
            rows.with_columns(new_run.cum_sum().over("user_idx").alias("run"))
            .group_by("user_idx", "run", maintain_order=True)
            .agg(pl.col("item_idx").first(), pl.col("ts").max(), pl.col("weight").max())
        )
    pos = pos.with_columns(pl.int_range(pl.len()).over("user_idx").alias("position"))
    seqs = pos.group_by("user_idx", maintain_order=True).agg(pl.col("item_idx").alias("items"))
    users = UserTable.from_features(fs, history_length=history_length, sequences=seqs)
    item_idx = pos["item_idx"].to_numpy().astype(np.int64)
    counts = np.bincount(item_idx, minlength=fs.vocabs.item.size).astype(np.float64)
    logq = np.log(np.maximum(counts, 1.0) / max(len(item_idx), 1))
    return TrainingExamples(
        users=users,
        items=ItemTable.from_features(fs),
        user_idx=pos["user_idx"].to_numpy().astype(np.int64),
        position=pos["position"].to_numpy().astype(np.int64),
        item_idx=item_idx,
        weight=pos["weight"].to_numpy(),
        item_logq=logq,
    )


def inference_batches(
    table: UserTable | ItemTable, ids: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, KeyedJaggedTensor]]:
    """(indices, KJT) chunks for scoring every user or item; users use their latest history."""
    for a in range(0, len(ids), batch_size):
        sel = ids[a : a + batch_size].astype(np.int64)
        yield sel, table.kjt(sel)
