"""Users to product lists, in the one order every caller takes: history -> candidates (every
source, merged) -> the re-ranker's features -> scores (with the configured early exit) ->
business rules -> explanations. The nightly lists, the online API (one user or a batch), the
offline evaluation and the benchmarks all score users through `ListScorer`. Candidates and
features come from the version's arrays (`engine.request`) for small blocks of users and from
the frames (`engine.candidates`, `feature_frame`, which also build the re-ranker's training
lists) for large ones; the scores, rules and explanations after them are one code path.

    >>> scorer = ListScorer.build(ctx, ranker, cfg.rules, cfg.rerank)
    >>> scored = scorer.scored(users, k=10)               # every candidate, scored
    >>> lists = scorer.lists(users, k=10, explain=True)   # user_idx, rank, item_idx, score, ...
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.candidates import (
    CandidateContext,
    CandidateSource,
    default_sources,
    generate_candidates,
)
from engine.request.lists import (
    ListedItem,
    ScoredRows,
    UserLists,
    rule_users,
    score_users,
)
from engine.request.tables import RequestTables
from engine.rerank.config import RankerConfig
from engine.rerank.fallback import Ranker
from engine.rerank.features import feature_frame
from engine.rerank.lists import ItemFacts
from engine.rerank.ranker import EarlyExit, early_exit_for, feature_matrix, score_frame
from engine.rules import RulesConfig

ARRAY_MAX_USERS = 1000
"""Blocks of up to this many users are scored over the arrays, larger ones over the frames."""


@dataclass(frozen=True)
class ListScorer:
    """What turns users into lists: the version's request tables, its ranker and its rules."""

    tables: RequestTables
    ranker: Ranker
    names: list[str]
    facts: ItemFacts
    rules: RulesConfig
    rerank: RankerConfig
    sources: list[CandidateSource] | None = None
    """The candidate sources over frames, for blocks above `ARRAY_MAX_USERS`; None (a served
    version, whose tables were stored): every block is scored over the arrays."""

    @classmethod
    def build(cls, ctx: CandidateContext, ranker: Ranker, rules: RulesConfig,
              rerank: RankerConfig, *, names: list[str] | None = None) -> ListScorer:
        sources = default_sources(ctx)
        return cls(RequestTables.build(ctx, sources), ranker,
                   ranker.feature_name() if names is None else names,
                   ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors), rules, rerank,
                   sources)

    def scored(self, users: np.ndarray, *, k: int, allowed: np.ndarray | None = None
               ) -> ScoredRows:
        """`users`' candidates, features and re-ranker scores (the early exit cut for lists
        of `k`); rows whose item `allowed` (a mask by item index) rules out left out.

        Up to `ARRAY_MAX_USERS` users the candidates and features come from the arrays (a
        call's fixed cost is what counts there: 4-6 ms a user against ~45 ms); above it from
        the frames, whose joins run on all cores (at 5,000 users a chunk they list ~1.3x as
        many users a second as the arrays on 2 cores). Both give the same rows and features
        (tests hold them equal)."""
        users = np.asarray(users, np.int64)
        early_exit = early_exit_for(self.rerank, k)
        if self.sources is None or len(users) <= ARRAY_MAX_USERS:
            return score_users(self.tables, self.ranker, self.names, users, allowed=allowed,
                               early_exit=early_exit)
        return self._scored_frames(self.sources, users, allowed, early_exit)

    def _scored_frames(self, sources: list[CandidateSource], users: np.ndarray,
                       allowed: np.ndarray | None, early_exit: EarlyExit | None) -> ScoredRows:
        frame = (feature_frame(generate_candidates(sources, users), self.tables.ctx)
                 .sort("user_idx", "item_idx"))
        if allowed is not None:
            frame = frame.filter(pl.Series(allowed[frame["item_idx"].to_numpy()]))
        names = [s.name for s in sources]
        codes = np.zeros(frame.height, np.int64)
        for j, n in enumerate(names):
            codes |= frame[f"{n}_rank"].is_not_null().to_numpy().astype(np.int64) << j
        order = np.unique(users)
        return ScoredRows(order, np.searchsorted(order, frame["user_idx"].to_numpy()),
                          frame["item_idx"].to_numpy(), feature_matrix(frame, self.names),
                          score_frame(self.ranker, frame, self.names, early_exit), codes, names)

    def rule(self, scored: ScoredRows, *, k: int,
             exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False
             ) -> UserLists:
        """The lists of scored users under the rules (and their explanations)."""
        return rule_users(scored, self.ranker, self.names, self.facts, self.rules, k=k,
                          exclude=exclude, explain=explain,
                          shap_trees=self.rerank.explain_shap_trees)

    def user_list(self, user: int, *, k: int, exclude: Collection[int] = (),
                  allowed: np.ndarray | None = None, explain: bool = False
                  ) -> list[ListedItem]:
        """One known user's top `k` (an online request): the same stages as `lists`."""
        scored = self.scored(np.array([user], np.int64), k=k, allowed=allowed)
        return self.rule(scored, k=k, exclude={int(user): exclude}, explain=explain).listed[0]

    def lists(self, users: np.ndarray, *, k: int,
              exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False,
              allowed: np.ndarray | None = None) -> pl.DataFrame:
        """user_idx, rank, item_idx, score, sources, rules (and why, with `explain`)."""
        return self.rule(self.scored(users, k=k, allowed=allowed), k=k, exclude=exclude,
                         explain=explain).frame()
