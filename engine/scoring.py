"""Users to product lists, in the one order every caller takes: history -> candidates (every
source, merged) -> the re-ranker's features -> scores (with the configured early exit) ->
business rules -> explanations. The nightly lists, the online API (one user or a batch), the
offline evaluation and the benchmarks all score users through `ListScorer`. Candidates and
features come from the version's arrays (`engine.request`), in blocks of users scored on a
thread per core; the Polars frames (`engine.candidates`, `feature_frame`) stay the reference
they are tested against and what the re-ranker's training lists are built from.

    >>> scorer = ListScorer.build(ctx, ranker, cfg.rules, cfg.rerank)
    >>> scored = scorer.scored(users, k=10)               # every candidate, scored
    >>> lists = scorer.lists(users, k=10, explain=True)   # user_idx, rank, item_idx, score, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from engine.candidates import ModelContext, default_sources
from engine.config import RulesConfig
from engine.request.candidates import LiveItems
from engine.request.lists import (
    ListedItem,
    ScoredRows,
    UserLists,
    cut_lists,
    rule_users,
    score_users,
)
from engine.request.tables import RequestTables
from engine.rerank.config import RerankConfig
from engine.rerank.fallback import Ranker
from engine.rerank.lists import ItemFacts, score_order_only
from engine.rerank.ranker import early_exit_for

BLOCK_USERS = 250
"""Users scored together as one block of arrays; a larger call is cut into blocks scored on a
thread per core (numpy, FAISS, LightGBM and the compiled kernels of
`engine.kernels` release the GIL). At a million items one thread
lists 447 users/s in blocks of 250, 391 in blocks of 1,000 and 265 in one block of 2,000 (the
sorts and gathers outgrow the caches); two threads over 250-user blocks list 725-738 users/s,
2.4x the Polars frames (299 users/s at 5,000-user chunks), with the same lists."""

T = TypeVar("T")


@dataclass(frozen=True)
class ListScorer:
    """What turns users into lists: the version's request tables, its ranker and its rules."""

    tables: RequestTables
    ranker: Ranker
    names: list[str]
    facts: ItemFacts
    rules: RulesConfig
    rerank: RerankConfig
    threads: int | None = None  # blocks scored at once (default: one per core)

    @classmethod
    def build(
        cls,
        ctx: ModelContext,
        ranker: Ranker,
        rules: RulesConfig,
        rerank: RerankConfig,
        *,
        names: list[str] | None = None,
        tables: RequestTables | None = None,
        threads: int | None = None,
    ) -> ListScorer:
        """`tables` when the version stores them already (else built from `ctx`)."""
        return cls(
            RequestTables.build(ctx, default_sources(ctx)) if tables is None else tables,
            ranker,
            ranker.feature_name() if names is None else names,
            ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors),
            rules,
            rerank,
            threads,
        )

    def warm(self) -> None:
        """List a user with a history alone and in a block of two, so that the compiled
        kernels' machine code (read from numba's cache, or compiled on a fresh install) is
        loaded before the first request and not during it (~0.2 s, ~6 s uncached)."""
        has = np.flatnonzero(np.diff(self.tables.history.indptr))[:2]
        if len(has):
            self.user_list(int(has[0]), k=10)
            self.lists(has, k=10)

    def _blocks(self, users: np.ndarray, fn: Callable[[np.ndarray], T]) -> list[T]:
        """`fn` of each block of `users` (in order), the blocks on a thread per core."""
        if len(users) <= BLOCK_USERS:
            return [fn(users)]
        blocks = [users[a : a + BLOCK_USERS] for a in range(0, len(users), BLOCK_USERS)]
        threads = self.threads or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=min(len(blocks), threads)) as pool:
            return list(pool.map(fn, blocks))

    def scored(
        self,
        users: np.ndarray,
        *,
        k: int,
        allowed: np.ndarray | None = None,
        live: LiveItems | None = None,
    ) -> ScoredRows:
        """`users`' candidates, features and re-ranker scores (the early exit cut for lists
        of `k`); rows whose item `allowed` (a mask by item index) rules out left out; `live`
        adds the items of events since the version to their histories. The same rows and
        features as the frame path (tests hold them equal)."""
        users = np.asarray(users, np.int64)
        early_exit = early_exit_for(self.rerank, k)
        parts = self._blocks(
            users,
            lambda block: score_users(
                self.tables,
                self.ranker,
                self.names,
                block,
                allowed=allowed,
                early_exit=early_exit,
                live=live,
            ),
        )
        return parts[0] if len(parts) == 1 else ScoredRows.concat(parts)

    def rule(
        self,
        scored: ScoredRows,
        *,
        k: int,
        exclude: Mapping[int, Collection[int]] | None = None,
        explain: bool = False,
    ) -> UserLists:
        """The lists of scored users under the rules (and their explanations)."""
        return rule_users(
            scored,
            self.ranker,
            self.names,
            self.facts,
            self.rules,
            k=k,
            exclude=exclude,
            explain=explain,
            shap_trees=self.rerank.explain_shap_trees,
        )

    def user_list(
        self,
        user: int,
        *,
        k: int,
        exclude: Collection[int] = (),
        allowed: np.ndarray | None = None,
        explain: bool = False,
        live: np.ndarray | None = None,
    ) -> list[ListedItem]:
        """One known user's top `k` (an online request): the same stages as `lists`; `live`
        holds the items of the user's events since the version, oldest first."""
        scored = self.scored(
            np.array([user], np.int64),
            k=k,
            allowed=allowed,
            live=None if live is None or not len(live) else {int(user): live},
        )
        return self.rule(scored, k=k, exclude={int(user): exclude}, explain=explain).listed[0]

    def lists(
        self,
        users: np.ndarray,
        *,
        k: int,
        exclude: Mapping[int, Collection[int]] | None = None,
        explain: bool = False,
        allowed: np.ndarray | None = None,
    ) -> pl.DataFrame:
        """user_idx, rank, item_idx, score, sources, rules (and why, with `explain`)."""
        if not exclude and not explain and score_order_only(self.rules, self.facts):
            frames = self._blocks(
                np.asarray(users, np.int64),
                lambda block: cut_lists(self.scored(block, k=k, allowed=allowed), self.facts, k=k),
            )
        else:
            frames = self._blocks(
                np.asarray(users, np.int64),
                lambda block: self.rule(
                    self.scored(block, k=k, allowed=allowed), k=k, exclude=exclude, explain=explain
                ).frame(),
            )
        return frames[0] if len(frames) == 1 else pl.concat(frames)
