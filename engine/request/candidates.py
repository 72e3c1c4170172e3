"""Users' candidates from every source, over the version's arrays: the same items, scores and
ranks as `engine.candidates` gives for those users (the frame path stays the reference; a
test holds the two equal). One call serves a single online request or a chunk of the nightly's
users: every step is a gather, a sort or a grouped sum over all of the users' rows at once
(the loops among them compiled, in `engine.kernels`).

Rows are keyed by `row`, the position of their user in the `users` given, and by item; a
(row, item) pair is one int64 key, `row * n_items + item`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine import kernels
from engine.candidates.covisit import CovisitSource
from engine.candidates.itemitem import ScoreRows
from engine.candidates.popular import ColdUserSource, RepeatSource, TrendingSource
from engine.candidates.sequence import TransitionSource
from engine.candidates.vectors import AnnSource, ContentSource
from engine.request.tables import RequestTables, Rows


@dataclass(frozen=True)
class Found:
    """(row, item, score) rows: one source's candidates, or a grouped score."""

    row: np.ndarray
    item: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> Found:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))


@dataclass(frozen=True)
class Recent:
    """Each user's last `recent_items` history items (repeats kept, oldest first) and their
    weights, the latest weighing 1, the one before 1/2, and so on."""

    row: np.ndarray
    items: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class Candidates:
    """The merged candidates of `users`, sorted by (row, item): each source's score and rank
    (NaN where it did not propose the item), and what the features need besides."""

    users: np.ndarray
    row: np.ndarray
    items: np.ndarray
    scores: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    recent: Recent
    item_item: dict[str, ScoreRows]  # the item-to-item models' scores of the users
    next_scores: Found  # every transition score (not cut to the source's size)

    @property
    def n_sources(self) -> np.ndarray:
        out = np.zeros(len(self.items), np.int32)
        for r in self.ranks.values():
            out += ~np.isnan(r)
        return out


def _keys(row: np.ndarray, item: np.ndarray, n: int) -> np.ndarray:
    return row.astype(np.int64) * np.int64(n) + item.astype(np.int64)


LiveItems = Mapping[int, np.ndarray]
"""By user index: items of the user's events since the version was built, oldest first."""


@dataclass(frozen=True)
class UserRows:
    """A block's histories (oldest first) and seen items by row (the position of the user in
    the block): the version's rows, with the items of the users' events since (`live`)
    appended to the history and added to the seen items."""

    hist_row: np.ndarray
    hist_item: np.ndarray
    from_end: np.ndarray  # the item's position from the end of its history, the last 1
    seen: np.ndarray  # sorted keys row * n_items + item
    extra: dict[int, np.ndarray]  # by row: the live items (for the ANN's exclusions)

    @classmethod
    def of(cls, t: RequestTables, users: np.ndarray, live: LiveItems | None = None) -> UserRows:
        n_items = len(t.ctx.eligible)
        pos, row = t.history.gather(users)
        items = t.history.cols["history"][pos]
        end = t.history.indptr[np.maximum(users, 0)[row] + 1] if len(row) else pos
        from_end = end - pos
        spos, srow = t.seen.gather(users)
        seen = _keys(srow, t.seen.cols["item_idx"][spos], n_items)
        extra = {
            r: np.asarray(live[u], np.int64)
            for r, u in enumerate(users.tolist())
            if live and u in live and len(live[u])
        }
        if extra:
            add_row = np.concatenate([np.full(len(v), r, np.int64) for r, v in extra.items()])
            add_item = np.concatenate(list(extra.values()))
            order = np.argsort(np.r_[row, add_row], kind="stable")  # a user's live items last
            row, items = np.r_[row, add_row][order], np.r_[items, add_item][order]
            counts = np.bincount(row, minlength=len(users))
            place = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
            from_end = counts[row] - place
            seen = np.unique(np.r_[seen, _keys(add_row, add_item, n_items)])
        return cls(row, items, from_end, seen, extra)

    def tail(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user row, item, position from the end, the last item 1) of each user's last `n`
        history items, oldest first."""
        keep = self.from_end <= n
        return self.hist_row[keep], self.hist_item[keep], self.from_end[keep]


def recent(t: RequestTables, rows: UserRows) -> Recent:
    row, items, from_end = rows.tail(t.ctx.cfg.recent_items)
    return Recent(row, items, 1.0 / from_end.astype(np.float64))


class Finisher:
    """`CandidateContext.finish` over arrays: eligible items the user has not seen, the best
    `n` per user by score (ties: the lower item), ranked from 1."""

    def __init__(self, t: RequestTables, rows: UserRows) -> None:
        self.eligible = t.ctx.eligible
        self.n_items = len(self.eligible)
        self.seen = rows.seen

    def __call__(self, f: Found, n: int, *, drop_seen: bool = True) -> Found:
        return Found(
            *kernels.best(
                f.row,
                f.item.astype(np.int64, copy=False),
                f.score.astype(np.float64, copy=False),
                self.eligible,
                self.seen,
                n,
                drop_seen,
            )
        )


def _grouped(
    row: np.ndarray, item: np.ndarray, value: np.ndarray, n_items: int, *, how: str = "sum"
) -> Found:
    """One row per (row, item): the sum (or max) of `value`, added in input order."""
    uniq, out = kernels.group(
        _keys(row, item, n_items), value.astype(np.float64, copy=False), how == "max"
    )
    return Found(uniq // n_items, uniq % n_items, out)


def _spread(
    rows: Rows | None, rec: Recent, value: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(recent row, user row, neighbour, weight x value) of each neighbour of each recent
    item."""
    if rows is None or not len(rec.items):
        e = np.empty(0, np.int64)
        return e, e, e, np.empty(0)
    pos, owner = rows.gather(rec.items)
    return (
        owner,
        rec.row[owner],
        rows.cols["neighbour"][pos],
        rec.weights[owner] * rows.cols[value][pos],
    )


def round9(x: np.ndarray) -> np.ndarray:
    """Polars' `round(9)` (half to even) in numpy, without a Series per request."""
    return np.rint(x * 1e9) / 1e9


def transition_scores(t: RequestTables, rec: Recent) -> Found:
    """Every item one step from each user's last items, scored as
    `sequence.transition_scores` (rounded to 9 places the same way)."""
    _, row, nb, w = _spread(t.transitions, rec, "weight")
    f = _grouped(row, nb, w, len(t.ctx.eligible))
    return Found(f.row, f.item, round9(f.score))


def _covisit(t: RequestTables, rec: Recent) -> Found:
    _, row, nb, w = _spread(t.covisit, rec, "weight")
    return _grouped(row, nb, w, len(t.ctx.eligible))


def _content(t: RequestTables, rec: Recent) -> Found:
    owner, row, nb, w = _spread(t.content, rec, "sim")
    keep = nb != rec.items[owner]
    return _grouped(row[keep], nb[keep], w[keep], len(t.ctx.eligible), how="max")


def _trending(t: RequestTables, users: np.ndarray) -> Found:
    tops, trend = t.top_categories, t.trending
    assert tops is not None and trend is not None
    pos, row = tops.gather(users)
    cats, share = tops.cols["top_category"][pos], tops.cols["share"][pos]
    pos2, owner = trend.gather(cats)
    return _grouped(
        row[owner],
        trend.cols["item_idx"][pos2],
        trend.cols["count"][pos2] * share[owner],
        len(t.ctx.eligible),
    )


def _repeat(t: RequestTables, rows: UserRows, users: np.ndarray) -> Found:
    row, items, from_end = rows.tail(t.ctx.cfg.repeat)
    kept = np.bincount(row, minlength=len(users))  # items kept per user (n or fewer)
    # the latest of the user's kept items scores their count, the oldest 1
    return Found(row, items, (kept[row] - from_end + 1).astype(np.float64))


def _cold_user(t: RequestTables, users: np.ndarray) -> Found:
    warm, tokens, per_token, overall = t.cold_warm, t.cold_tokens, t.cold_per_token, t.cold_overall
    assert warm is not None and tokens is not None and per_token is not None and overall is not None
    inside = (users >= 0) & (users < len(warm))
    cold = np.flatnonzero(~(inside & warm[np.where(inside, users, 0)]))
    if not len(cold):
        return Found.empty()
    pos, owner = tokens.gather(users[cold])
    pos2, owner2 = per_token.gather(tokens.cols["attr_tok"][pos])
    rows = np.r_[cold[owner[owner2]], np.repeat(cold, len(overall[0]))]
    items = np.r_[per_token.cols["item_idx"][pos2], np.tile(overall[0], len(cold))]
    shares = np.r_[per_token.cols["share"][pos2], np.tile(overall[1], len(cold))]
    return _grouped(rows, items, shares, len(t.ctx.eligible))


def _ann(t: RequestTables, rows: UserRows, users: np.ndarray) -> Found:
    ctx = t.ctx
    ptr, seen = t.seen.indptr, t.seen.cols["item_idx"]
    inside = (users >= 0) & (users < t.seen.n_keys)
    exclude = [
        seen[ptr[u] : ptr[u + 1]] if ok else seen[:0]
        for u, ok in zip(users.tolist(), inside.tolist(), strict=True)
    ]
    for r, items in rows.extra.items():
        exclude[r] = np.union1d(exclude[r], items)
    scores, items = ctx.index.search(
        ctx.user_vectors[users],
        ctx.cfg.ann,
        exclude=exclude,
        allowed=ctx.eligible,
    )
    row = np.repeat(np.arange(len(users), dtype=np.int64), items.shape[1])
    keep = items.ravel() >= 0
    return Found(
        row[keep], items.ravel()[keep].astype(np.int64), scores.ravel()[keep].astype(np.float64)
    )


def candidates(t: RequestTables, users: np.ndarray, live: LiveItems | None = None) -> Candidates:
    """Every source of the version for `users` (known users, any order), merged by item;
    `live` adds the items of events since the version to their histories and seen items."""
    users = np.asarray(users, np.int64)
    cfg = t.ctx.cfg
    rows = UserRows.of(t, users, live)
    rec = recent(t, rows)
    finish = Finisher(t, rows)
    found: dict[str, Found] = {}
    item_item: dict[str, ScoreRows] = {}
    nxt = Found.empty()
    for name in t.names:
        if name in t.item_item:
            s = t.item_item[name]
            row, items, item_scores, block = s.top(users, rows.extra)
            item_item[name] = block
            found[name] = finish(Found(row, items, item_scores), s.per_user)
        elif name == AnnSource.name:
            found[name] = finish(_ann(t, rows, users), cfg.ann)
        elif name == CovisitSource.name:
            found[name] = finish(_covisit(t, rec), cfg.covisit)
        elif name == ContentSource.name:
            found[name] = finish(_content(t, rec), cfg.content)
        elif name == TrendingSource.name:
            found[name] = finish(_trending(t, users), cfg.trending)
        elif name == RepeatSource.name:
            found[name] = finish(_repeat(t, rows, users), cfg.repeat, drop_seen=False)
        elif name == ColdUserSource.name:
            found[name] = finish(_cold_user(t, users), cfg.cold_user)
        elif name == TransitionSource.name:
            nxt = transition_scores(t, rec)
            found[name] = finish(nxt, cfg.transitions)
        else:
            raise TypeError(f"no array kernel for the candidate source {name!r}")
    n_items = len(t.ctx.eligible)
    parts = list(found.values())
    if parts:
        merged, scored, ranked = kernels.merge(
            np.concatenate([f.row for f in parts]),
            np.concatenate([f.item for f in parts]),
            np.concatenate([f.score for f in parts]),
            np.repeat(np.arange(len(parts), dtype=np.int64), [len(f.row) for f in parts]),
            len(parts),
            n_items,
        )
    else:
        merged, scored, ranked = np.empty(0, np.int64), np.empty((0, 0)), np.empty((0, 0))
    scores = {name: scored[j] for j, name in enumerate(found)}
    ranks = {name: ranked[j] for j, name in enumerate(found)}
    return Candidates(
        users, merged // n_items, merged % n_items, scores, ranks, rec, item_item, nxt
    )
