"""Users to product lists, in the one order every caller takes: history -> candidates (every
source, merged) -> the re-ranker's features -> scores (with the configured early exit) ->
business rules -> explanations. The nightly lists, `recommend_batch`, the offline evaluation
and the benchmarks score users through `ListScorer`; a single online request takes the same
stages over the version's arrays (`engine.request`), held equal to this path by tests.

    >>> scorer = ListScorer.build(ctx, ranker, cfg.rules, cfg.rerank)
    >>> frame, scores = scorer.scored(users, k=10)        # every candidate, scored
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
from engine.rerank.config import RankerConfig
from engine.rerank.fallback import Ranker
from engine.rerank.features import feature_frame
from engine.rerank.lists import ItemFacts, product_lists, with_explanations
from engine.rerank.ranker import early_exit_for, score_frame
from engine.rules import RulesConfig


@dataclass(frozen=True)
class ListScorer:
    """What turns users into lists: the candidate context and sources, the ranker and the
    rules of one version."""

    ctx: CandidateContext
    sources: list[CandidateSource]
    ranker: Ranker
    names: list[str]
    facts: ItemFacts
    rules: RulesConfig
    rerank: RankerConfig

    @classmethod
    def build(cls, ctx: CandidateContext, ranker: Ranker, rules: RulesConfig,
              rerank: RankerConfig, *, sources: list[CandidateSource] | None = None,
              names: list[str] | None = None) -> ListScorer:
        return cls(ctx, default_sources(ctx) if sources is None else sources, ranker,
                   ranker.feature_name() if names is None else names,
                   ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors), rules, rerank)

    def scored(self, users: np.ndarray, *, k: int, allowed: np.ndarray | None = None
               ) -> tuple[pl.DataFrame, np.ndarray]:
        """(feature frame of `users`' candidates, the re-ranker's score of each row), rows
        whose item `allowed` (a mask by item index) rules out left out after the features."""
        frame = feature_frame(generate_candidates(self.sources, users), self.ctx)
        if allowed is not None:
            frame = frame.filter(pl.Series(allowed[frame["item_idx"].to_numpy()]))
        return frame, score_frame(self.ranker, frame, self.names,
                                  early_exit_for(self.rerank, k))

    def lists(self, users: np.ndarray, *, k: int,
              exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False,
              allowed: np.ndarray | None = None) -> pl.DataFrame:
        """user_idx, rank, item_idx, score, sources, rules (and why, with `explain`)."""
        frame, scores = self.scored(users, k=k, allowed=allowed)
        return self.rule(frame, scores, k=k, exclude=exclude, explain=explain)

    def rule(self, frame: pl.DataFrame, scores: np.ndarray, *, k: int,
             exclude: Mapping[int, Collection[int]] | None = None, explain: bool = False
             ) -> pl.DataFrame:
        """The lists of a scored frame under the rules (and their explanations)."""
        lists = product_lists(frame, scores, self.facts, k=k, rules=self.rules, exclude=exclude)
        if not explain:
            return lists
        return with_explanations(lists, frame, self.ranker, self.names,
                                 shap_trees=self.rerank.explain_shap_trees)
