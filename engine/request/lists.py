"""Product lists over the version's arrays: candidates -> features -> the re-ranker (or the
signal order published instead) -> business rules -> explanations, for one online request or
a chunk of the nightly's users. The same lists, item for item, as `product_lists` over the
frame path gives."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine import kernels
from engine.config import RulesConfig
from engine.request.candidates import LiveItems, candidates
from engine.request.features import feature_matrix
from engine.request.tables import RequestTables
from engine.rerank.explain import SHAP_TREES, matrix_texts
from engine.rerank.fallback import Ranker, SourceOrder
from engine.rerank.lists import (
    NOT_ELIGIBLE,
    ItemFacts,
    apply_list_rules,
    rule_notes,
    why_text,
)
from engine.rerank.ranker import EarlyExit, score_matrix
from engine.rules import RuledList, shortlist_size


def ruled_list(
    items: np.ndarray,
    scores: np.ndarray,
    facts: ItemFacts,
    rules: RulesConfig,
    *,
    k: int,
    exclude: Collection[int] = (),
) -> RuledList:
    """One list under the rules from its best `shortlist_size(k)` rows by score (ties: the
    lower item), as `product_lists` cuts each user's rows."""
    order = np.lexsort((items, -scores))[: shortlist_size(k)]
    return apply_list_rules(items[order], scores[order], facts, k=k, rules=rules, exclude=exclude)


def anonymous_list(
    t: RequestTables,
    facts: ItemFacts,
    rules: RulesConfig,
    vector: np.ndarray,
    history: np.ndarray,
    *,
    k: int,
    exclude: Collection[int] = (),
    allowed: np.ndarray | None = None,
) -> list[ListedItem]:
    """A list for a user vector the version does not hold (from a history and attributes):
    the two-tower nearest items under the rules, no re-ranker (it has no user row to read)."""
    ctx = t.ctx
    n = min(ctx.index.size, shortlist_size(k) + len(exclude))
    scores, items = ctx.index.search(
        vector,
        n,
        exclude=[np.asarray(history, np.int64)],
        allowed=ctx.eligible if allowed is None else ctx.eligible & allowed,
    )
    keep = items[0] >= 0
    ruled = ruled_list(
        items[0][keep].astype(np.int64),
        scores[0][keep].astype(np.float64),
        facts,
        rules,
        k=k,
        exclude=exclude,
    )
    return [
        ListedItem(c.item, n, c.score, "sources: ann; anonymous: two-tower score")
        for n, c in enumerate(ruled.items, 1)
    ]


@dataclass(frozen=True)
class ListedItem:
    item: int
    rank: int
    score: float
    why: str | None = None


@dataclass(frozen=True)
class UserLists:
    """The lists of a block of users: per user (by position in `users`) its listed items."""

    users: np.ndarray
    listed: list[list[ListedItem]]
    notes: list[list[str]]  # what the rules did, per listed item
    sources: list[list[str]]  # the sources that proposed each listed item

    def frame(self) -> pl.DataFrame:
        """user_idx, rank, item_idx, score, sources, rules (and why, when explained), as
        `product_lists` (and `with_explanations`) give them."""
        rows = [
            (int(self.users[r]), it.rank, it.item, it.score, src, note, it.why)
            for r, (items, notes, sources) in enumerate(
                zip(self.listed, self.notes, self.sources, strict=True)
            )
            for it, note, src in zip(items, notes, sources, strict=True)
        ]
        cols: list[Sequence[object]] = list(zip(*rows, strict=True)) if rows else [[]] * 7
        out = pl.DataFrame(
            {
                "user_idx": cols[0],
                "rank": cols[1],
                "item_idx": cols[2],
                "score": cols[3],
                "sources": cols[4],
                "rules": cols[5],
            },
            schema={
                "user_idx": pl.Int64,
                "rank": pl.Int32,
                "item_idx": pl.Int64,
                "score": pl.Float64,
                "sources": pl.String,
                "rules": pl.String,
            },
        )
        if rows and rows[0][6] is not None:
            out = out.with_columns(pl.Series("why", cols[6], pl.String))
        return out


@dataclass(frozen=True)
class ScoredRows:
    """Users' candidates with their features and the re-ranker's scores, sorted by (row,
    item); `row` is the position of the row's user in `users`."""

    users: np.ndarray
    row: np.ndarray
    items: np.ndarray
    x: np.ndarray
    scores: np.ndarray
    codes: np.ndarray  # which sources proposed the row, one bit per source
    names: list[str]  # the sources, in bit order

    @classmethod
    def concat(cls, parts: list[ScoredRows]) -> ScoredRows:
        """Blocks of users scored apart, as one (their users in block order)."""
        offsets = np.cumsum([0, *(len(p.users) for p in parts[:-1])])
        return cls(
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.row + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.items for p in parts]),
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.codes for p in parts]),
            parts[0].names,
        )

    def sources(self, rows: list[int]) -> list[str]:
        """The comma-joined source names of the given rows."""
        return joined_sources(self.codes[rows], self.names)


def joined_sources(codes: np.ndarray, names: list[str]) -> list[str]:
    """The comma-joined names of each row's sources (bit j of its code: `names[j]`), each
    distinct set joined once: a block lists 40,000 items from a few dozen sets."""
    joined: dict[int, str] = {}
    out = []
    for code in codes.tolist():
        text = joined.get(code)
        if text is None:
            text = joined[code] = ",".join(n for j, n in enumerate(names) if code >> j & 1)
        out.append(text)
    return out


def cut_lists(s: ScoredRows, facts: ItemFacts, *, k: int) -> pl.DataFrame:
    """`rule_users(...).frame()` for lists no rule reorders or caps, with nothing excluded
    and no explanations (the nightly's lists): each user's best `shortlist_size(k)` rows by
    score, the ineligible among them dropped (and counted in the rules column), the first
    `k` listed. One pass over the block's arrays instead of Python objects per user."""
    order = np.lexsort((s.items, -s.scores, s.row))
    row, items, scores, codes = s.row[order], s.items[order], s.scores[order], s.codes[order]
    short = kernels.run_places(row) < shortlist_size(k)
    ok = (items >= 0) & (items < len(facts.eligible))
    ok[ok] = facts.eligible[items[ok]]
    dropped = np.bincount(row[short & ~ok], minlength=len(s.users))
    keep = short & ok
    row, items, scores, codes = row[keep], items[keep], scores[keep], codes[keep]
    rank = kernels.run_places(row) + 1
    top = rank <= k
    row, items, scores, codes, rank = row[top], items[top], scores[top], codes[top], rank[top]
    notes = np.array(
        [f"{NOT_ELIGIBLE} removed {n}" if n else "" for n in dropped.tolist()], dtype=object
    )
    return pl.DataFrame(
        {
            "user_idx": s.users[row],
            "rank": rank,
            "item_idx": items,
            "score": scores,
            "sources": joined_sources(codes, s.names),
            "rules": notes[row].tolist(),
        },
        schema={
            "user_idx": pl.Int64,
            "rank": pl.Int32,
            "item_idx": pl.Int64,
            "score": pl.Float64,
            "sources": pl.String,
            "rules": pl.String,
        },
    )


def score_users(
    t: RequestTables,
    ranker: Ranker,
    names: list[str],
    users: np.ndarray,
    *,
    allowed: np.ndarray | None = None,
    early_exit: EarlyExit | None = None,
    live: LiveItems | None = None,
) -> ScoredRows:
    """Candidates -> features -> scores of known `users` (`allowed`: a mask over items the
    caller's filters keep, applied after the features, as the frame path does; `live`: the
    items of users' events since the version, by user index)."""
    users = np.asarray(users, np.int64)
    c = candidates(t, users, live)
    x = feature_matrix(t, c, names)
    row, items = c.row, c.items
    codes = np.zeros(len(items), np.int64)
    for j, r in enumerate(c.ranks.values()):
        codes |= (~np.isnan(r)).astype(np.int64) << j
    if allowed is not None:
        keep = allowed[items]
        row, items, x, codes = row[keep], items[keep], x[keep], codes[keep]
    if isinstance(ranker, SourceOrder):
        col = x[:, names.index(ranker.column)]
        scores = np.where(np.isnan(col), -np.inf, col)
    else:
        scores = score_matrix(ranker, x, row, early_exit)
    return ScoredRows(users, row, items, x, scores, codes, list(c.ranks))


def rule_users(
    s: ScoredRows,
    ranker: Ranker,
    names: list[str],
    facts: ItemFacts,
    rules: RulesConfig,
    *,
    k: int,
    exclude: Mapping[int, Collection[int]] | None = None,
    explain: bool = False,
    shap_trees: int = SHAP_TREES,
) -> UserLists:
    """The top `k` of each user of `s` under the rules (`exclude[user]`: item indices never to
    list that user), explained on request."""
    exclude = exclude or {}
    bounds = np.searchsorted(s.row, np.arange(len(s.users) + 1))
    listed, notes, chosen = [], [], []
    for r in range(len(s.users)):
        a, b = bounds[r], bounds[r + 1]
        ruled = ruled_list(
            s.items[a:b], s.scores[a:b], facts, rules, k=k, exclude=exclude.get(int(s.users[r]), ())
        )
        listed.append([ListedItem(c_.item, n, c_.score) for n, c_ in enumerate(ruled.items, 1)])
        notes.append(rule_notes(ruled))
        picked = np.array([c_.item for c_ in ruled.items], np.int64)
        chosen.append((a + np.searchsorted(s.items[a:b], picked)).tolist())  # items sorted
    sources = [s.sources(js) for js in chosen]
    if explain:
        every = [j for js in chosen for j in js]
        texts = (
            [f"order: {ranker.column}"] * len(every)
            if isinstance(ranker, SourceOrder)
            else matrix_texts(ranker, s.x[every], names, shap_trees=shap_trees)
        )
        it = iter(texts)
        listed = [
            [
                ListedItem(li.item, li.rank, li.score, why_text(src, next(it), note))
                for li, src, note in zip(lst, srcs, nts, strict=True)
            ]
            for lst, srcs, nts in zip(listed, sources, notes, strict=True)
        ]
    return UserLists(s.users, listed, notes, sources)
