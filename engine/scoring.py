"""Users to product lists, in the one order every caller takes: history -> candidates (every
source, merged) -> the re-ranker's features -> scores (with the configured early exit) ->
business rules -> explanations, over the version's arrays (`engine.request`). The nightly
lists, the online API (one user or a batch), the offline evaluation and the benchmarks all
score users through `ListScorer`. The frame path (`engine.candidates`, `feature_frame`) builds
the re-ranker's training lists and stays the reference the arrays are tested against.

    >>> scorer = ListScorer.build(ctx, ranker, cfg.rules, cfg.rerank)
    >>> scored = scorer.scored(users, k=10)               # every candidate, scored
    >>> lists = scorer.lists(users, k=10, explain=True)   # user_idx, rank, item_idx, score, ...
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.candidates import CandidateContext, CandidateSource, default_sources
from engine.request.lists import ScoredRows, UserLists, rule_users, score_users
from engine.request.tables import RequestTables
from engine.rerank.config import RankerConfig
from engine.rerank.fallback import Ranker
from engine.rerank.lists import ItemFacts
from engine.rerank.ranker import early_exit_for
from engine.rules import RulesConfig


@dataclass(frozen=True)
class ListScorer:
    """What turns users into lists: the version's request tables, its ranker and its rules."""

    tables: RequestTables
    ranker: Ranker
    names: list[str]
    facts: ItemFacts
    rules: RulesConfig
    rerank: RankerConfig

    @classmethod
    def build(cls, ctx: CandidateContext, ranker: Ranker, rules: RulesConfig,
              rerank: RankerConfig, *, sources: list[CandidateSource] | None = None,
              names: list[str] | None = None, tables: RequestTables | None = None,
              facts: ItemFacts | None = None) -> ListScorer:
        if tables is None:
            tables = RequestTables.build(ctx, default_sources(ctx) if sources is None
                                         else sources)
        return cls(tables, ranker, ranker.feature_name() if names is None else names,
                   facts or ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors), rules,
                   rerank)

    @property
    def sources(self) -> list[CandidateSource]:
        return self.tables.sources

    def scored(self, users: np.ndarray, *, k: int, allowed: np.ndarray | None = None
               ) -> ScoredRows:
        """`users`' candidates, features and re-ranker scores (the early exit cut for lists
        of `k`); rows whose item `allowed` (a mask by item index) rules out left out."""
        return score_users(self.tables, self.ranker, self.names, users, allowed=allowed,
                           early_exit=early_exit_for(self.rerank, k))

    def rule(self, scored: ScoredRows, *, k: int,
             exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False
             ) -> UserLists:
        """The lists of scored users under the rules (and their explanations)."""
        return rule_users(scored, self.ranker, self.names, self.facts, self.rules, k=k,
                          exclude=exclude, explain=explain,
                          shap_trees=self.rerank.explain_shap_trees)

    def lists(self, users: np.ndarray, *, k: int,
              exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False,
              allowed: np.ndarray | None = None) -> pl.DataFrame:
        """user_idx, rank, item_idx, score, sources, rules (and why, with `explain`)."""
        return self.rule(self.scored(users, k=k, allowed=allowed), k=k, exclude=exclude,
                         explain=explain).frame()
