"""Item-to-item collaborative models over each user's whole history in the feature window:
EASE (Steck 2019, closed form, a dense item x item matrix) and item-kNN (cosine on the
co-occurrence matrix, sparse). On shops whose users come back rarely these simple models beat
anything that looks only at recent windows; as candidate sources and as features of every
candidate they let the re-ranker stack what they know instead of losing to them.

A model is a weight matrix W (items x items): score(u, j) = sum of W[i, j] over the items i
the user had. `scores` gives a block of users' scores over the catalogue, `pair_scores` one
score per (user, item) row of a candidate frame.

    >>> m = user_items(fs)                       # (n_users, n_items) binary, CSR
    >>> model = ItemItem.ease(m, lam=500.0, max_items=30_000)
    >>> model.scores(np.array([1, 2]))           # (2, n_items) float32
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from engine.kernels import find, take_found
from pipelines.dataset import FeatureSet

GATHER_VALUES, GATHER_PER_ITEMS = 1_600, 100
"""One user's sparse-model scores are added up with numpy while the weights gathered number
at most `GATHER_VALUES + n_items / GATHER_PER_ITEMS` (see `ItemItem._one_sparse`)."""
DENSE_PER_BLOCK = 1 << 25
"""Dense (user x item) scores held at once by `pair_scores` (128 MB of float32)."""


def binary_matrix(
    user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    """(n_users, n_items) float32, 1 at every (user, item) pair given (repeats count once)."""
    m = sp.csr_matrix(
        (np.ones(len(user_idx), np.float32), (user_idx, item_idx)),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    m.data[:] = 1.0  # duplicates were summed: binary again
    return m


def user_items(fs: FeatureSet) -> sp.csr_matrix:
    """(n_users, n_items) float32, 1 where the user had a positive in the feature window."""
    w = fs.window_interactions()
    return binary_matrix(
        w["user_idx"].to_numpy(), w["item_idx"].to_numpy(), fs.vocabs.user.size, fs.vocabs.item.size
    )


def ease_weights(m: sp.csr_matrix, lam: float, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept item indices, B): EASE's B = I - P diagMat(1 / diag(P)), P = (X'X + lam I)^-1, on
    the `max_items` most interacted items (every item when they fit: an item nobody had
    scores 0). A Cholesky inverse in float32 (the Gram matrix plus
    lam I is positive definite): half the time of a float64 LU inverse, and the same lists."""
    deg = np.asarray(m.sum(axis=0)).ravel()
    keep = np.sort(np.argsort(-deg, kind="stable")[:max_items])
    keep = keep[deg[keep] > 0] if len(keep) < m.shape[1] else keep  # all: no column gather
    sub = m[:, keep]
    gram = torch.from_numpy((sub.T @ sub).toarray().astype(np.float32))
    gram.diagonal().add_(lam)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    del gram
    p /= -torch.diag(p)[None, :]
    p.fill_diagonal_(0.0)
    # row-major: the inverse comes column-major, and scipy's sparse @ dense copies such an
    # operand whole on every call (23 ms per call at 3k items, against 0.01 ms)
    return keep, np.ascontiguousarray(p.numpy())


def knn_weights(m: sp.csr_matrix, neighbours: int, shrink: float) -> sp.csr_matrix:
    """Cosine similarity of items' user sets (co-occurrence / sqrt of both degrees, shrunk),
    each item's `neighbours` most similar items kept."""
    co = (m.T @ m).tocsr().astype(np.float32)
    deg = np.asarray(m.sum(axis=0)).ravel().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    co = co.tocoo()
    sim = co.data / (np.sqrt(deg[co.row] * deg[co.col]) + shrink)
    return keep_top_per_row(sp.csr_matrix((sim, (co.row, co.col)), shape=co.shape), neighbours)


def keep_top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """`m` with all but each row's `k` largest entries dropped."""
    m = m.tocsr()
    row = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-m.data, row))  # by row, largest first
    rank = np.arange(len(order)) - m.indptr[row[order]]  # position within the row
    keep = order[rank < k]
    return sp.csr_matrix(
        (m.data[keep], (row[keep], m.indices[keep])), shape=m.shape, dtype=np.float32
    )


@dataclass(frozen=True)
class ScoreRows:
    """A block of users' scores: dense (users x items) for a dense model, CSR (zeros not
    stored, columns sorted) for a sparse one, whose dense block would not fit at a million
    items (5,000 users x 1M items is 20 GB of float32)."""

    dense: np.ndarray | None = None
    sparse: sp.csr_matrix | None = None

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32 score of each (rows[r], items[r]) (0 where a sparse model has none)."""
        if self.dense is not None:
            return self.dense[rows, items]
        s = self.sparse
        assert s is not None
        n = np.int64(s.shape[1])
        keys = np.repeat(
            np.arange(s.shape[0], dtype=np.int64), np.diff(s.indptr)
        ) * n + s.indices.astype(np.int64)
        at = find(keys, np.asarray(rows, np.int64) * n + np.asarray(items, np.int64))
        return take_found(s.data, at, 0.0).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ItemItem:
    """A fitted item-to-item model and the user x item matrix it scores users from."""

    history: sp.csr_matrix  # (n_users, n_items) binary
    weights: np.ndarray | sp.csr_matrix  # (len(keep), len(keep)) dense, or (n, n) sparse
    keep: np.ndarray | None = None  # columns the dense weights cover (None: all)
    last: dict[str, tuple[np.ndarray, ScoreRows]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """The users and scores of the last `scores` call: the candidate source scores a chunk of
    users and the re-ranker's features then ask for pairs of the same users."""

    @classmethod
    def ease(cls, history: sp.csr_matrix, *, lam: float, max_items: int) -> ItemItem:
        keep, b = ease_weights(history, lam, max_items)
        return cls(history, b, keep)

    @classmethod
    def knn(cls, history: sp.csr_matrix, *, neighbours: int, shrink: float) -> ItemItem:
        return cls(history, knn_weights(history, neighbours, shrink))

    @property
    def n_items(self) -> int:
        return int(self.history.shape[1])

    def rows(self, users: np.ndarray, extra: Mapping[int, np.ndarray] | None) -> sp.csr_matrix:
        """`users`' rows of the binary history, with the items `extra[r]` added to row `r`
        (a user's events since the version)."""
        rows = self.history[np.asarray(users, np.int64)]
        if not extra:
            return rows
        coo = rows.tocoo()
        r = np.concatenate([coo.row, *(np.full(len(v), k) for k, v in extra.items())])
        c = np.concatenate([coo.col, *extra.values()])
        out = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=rows.shape)
        out.data[:] = 1.0  # binary: an item seen again counts once
        out.sort_indices()
        return out

    def scores(
        self, users: np.ndarray, extra: Mapping[int, np.ndarray] | None = None
    ) -> np.ndarray:
        """(len(users), n_items) float32; NaN on items the model does not cover. `extra`
        adds items to the users' rows (by row) for this call only: nothing is kept."""
        users = np.asarray(users, np.int64)
        if extra:
            return self._dense_of(self.rows(users, extra))
        if (
            len(users) == 1
            and isinstance(self.weights, np.ndarray)
            and self.keep is not None
            and len(self.keep) == self.n_items
        ):
            out = self._one_dense(int(users[0]))
            self.last["entry"] = (users, ScoreRows(dense=out))
            return out
        out = self._dense_of(self.history[users])
        self.last["entry"] = (users, ScoreRows(dense=out))  # one assignment: a reader in
        return out  # another thread sees the old pair or the new one, never a mix

    def _dense_of(self, rows: sp.csr_matrix) -> np.ndarray:
        if self.keep is None:
            return np.asarray((rows @ self.weights).todense(), np.float32)
        if len(self.keep) == self.n_items:  # every item: no scatter (6x the product)
            return np.asarray(rows @ self.weights, np.float32)
        out = np.full((rows.shape[0], self.n_items), np.nan, np.float32)
        out[:, self.keep] = rows[:, self.keep] @ self.weights
        return out

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weights)

    def sparse_scores(
        self, users: np.ndarray, extra: Mapping[int, np.ndarray] | None = None
    ) -> sp.csr_matrix:
        """A sparse model's scores of `users` as CSR (see `ScoreRows`), kept for `pair_scores`
        of the same users (not when `extra` adds items to their rows for this call)."""
        users = np.asarray(users, np.int64)
        if extra:
            out = sp.csr_matrix(self.rows(users, extra) @ self.weights, dtype=np.float32)
            out.sort_indices()
            return out
        if len(users) == 1:
            out = self._one_sparse(int(users[0]))
        else:
            out = sp.csr_matrix(self.history[users] @ self.weights, dtype=np.float32)
            out.sort_indices()
        self.last["entry"] = (users, ScoreRows(sparse=out))
        return out

    def score_rows(self, users: np.ndarray) -> ScoreRows:
        """`users`' scores in the form that fits the model (sparse for a sparse model)."""
        if self.is_sparse:
            return ScoreRows(sparse=self.sparse_scores(users))
        return ScoreRows(dense=self.scores(users))

    def _one_dense(self, user: int) -> np.ndarray:
        """(1, n_items) dense-model scores of one user: the rows of the user's items added in
        their stored order, as scipy's sparse @ dense adds them (the same float32 sums),
        without a sparse row slice per request."""
        h = self.history
        out = np.zeros((1, self.n_items), np.float32)
        for j in h.indices[h.indptr[user] : h.indptr[user + 1]]:
            out[0] += self.weights[j]
        return out

    def _one_sparse(self, user: int) -> sp.csr_matrix:
        """(1, n_items) sparse-model scores of one user, the same float32 sums as scipy's
        product over a block (each column added up in the order of the user's items). While
        the user's items hold few weights in all (`GATHER_VALUES`), they are gathered and
        added with numpy; above it, scipy's product of a one-row matrix made of the user's
        CSR row (never a fancy row slice: it costs more). scipy's product costs ~0.06 ms plus
        ~0.15 ms per million catalogue items whatever the history (its dense workspace), and
        ~0.01 ms per thousand weights; the gather ~0.03 ms plus ~0.028 ms per thousand: the
        two meet near 10,000 weights at a million items and 1,600 at 3,000 items."""
        h, w = self.history, self.weights
        if isinstance(w, np.ndarray):
            raise TypeError("a dense model's scores are not sparse")
        lo, hi = int(h.indptr[user]), int(h.indptr[user + 1])
        items = h.indices[lo:hi].astype(np.int64)
        start = w.indptr[items].astype(np.int64)
        n = w.indptr[items + 1].astype(np.int64) - start
        if int(n.sum()) > GATHER_VALUES + self.n_items // GATHER_PER_ITEMS:
            row = sp.csr_matrix(
                (h.data[lo:hi], h.indices[lo:hi], np.array([0, hi - lo])), shape=(1, self.n_items)
            )
            out = sp.csr_matrix(row @ w, dtype=np.float32)
            out.sort_indices()
            return out
        pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(start, n)
        cols, vals = w.indices[pos], w.data[pos].astype(np.float32)
        # a stable sort groups each column's values in the user's item order; add.at then
        # adds them one by one in that order (np.unique's inverse costs 4x the sort here)
        order = np.argsort(cols, kind="stable")
        sorted_cols = cols[order]
        first = np.ones(len(cols), bool)
        first[1:] = sorted_cols[1:] != sorted_cols[:-1]
        uniq = sorted_cols[first]
        acc = np.zeros(len(uniq), np.float32)
        np.add.at(acc, np.cumsum(first) - 1, vals[order])
        keep = acc != 0
        return sp.csr_matrix(
            (acc[keep], uniq[keep], np.array([0, int(keep.sum())])), shape=(1, self.n_items)
        )

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One score per (users[r], items[r]) row, computed a block of users at a time."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        entry = self.last.get("entry")
        if entry is not None:
            known, block = entry
            order = np.argsort(known, kind="stable")
            at = np.searchsorted(known, users, sorter=order)
            at = order[np.minimum(at, len(known) - 1)] if len(known) else at
            if len(known) and (known[at] == users).all():
                return block.at(at, items).copy()
        out = np.full(len(users), np.nan, np.float32)
        uniq, pos = np.unique(users, return_inverse=True)
        per_block = max(1, DENSE_PER_BLOCK // max(self.n_items, 1))
        order = np.argsort(pos, kind="stable")
        bounds = np.searchsorted(pos[order], np.arange(0, len(uniq) + per_block, per_block))
        for b, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            if lo == hi:
                continue
            rows = order[lo:hi]
            scored = self.score_rows(uniq[b * per_block : (b + 1) * per_block])
            out[rows] = scored.at(pos[rows] - b * per_block, items[rows])
        return out


def top_of_scores(s: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of the k best finite scores per row (ties by lower index), -1
    where a row has fewer."""
    k_eff = min(k, s.shape[1])
    part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff]
    vals = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top = np.where(np.isfinite(np.take_along_axis(vals, order, axis=1)), top, -1)
    if k_eff < k:
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-1)
    return top
