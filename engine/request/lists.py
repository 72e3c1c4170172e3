"""One known user's product list over the version's arrays: candidates -> features -> the
re-ranker (or the signal order published instead) -> business rules -> explanations. The same
list, item for item, as the batch path's `product_lists` for that user."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from engine.request.candidates import user_candidates
from engine.request.features import feature_matrix
from engine.request.tables import RequestTables
from engine.rerank.explain import SHAP_TREES, matrix_texts
from engine.rerank.fallback import Ranker, SourceOrder
from engine.rerank.lists import ItemFacts, apply_list_rules, rule_notes, why_text
from engine.rerank.ranker import EarlyExit, score_matrix
from engine.rules import RuledList, RulesConfig, shortlist_size


def ruled_list(items: np.ndarray, scores: np.ndarray, facts: ItemFacts, rules: RulesConfig,
               *, k: int, exclude: Collection[int] = ()) -> RuledList:
    """One list under the rules from its best `shortlist_size(k)` rows by score (ties: the
    lower item), as `product_lists` cuts each user's rows."""
    order = np.lexsort((items, -scores))[:shortlist_size(k)]
    return apply_list_rules(items[order], scores[order], facts, k=k, rules=rules,
                            exclude=exclude)


def anonymous_list(t: RequestTables, facts: ItemFacts, rules: RulesConfig,
                   vector: np.ndarray, history: np.ndarray, *, k: int,
                   exclude: Collection[int] = (), allowed: np.ndarray | None = None
                   ) -> list[ListedItem]:
    """A list for a user vector the version does not hold (from a history and attributes):
    the two-tower nearest items under the rules, no re-ranker (it has no user row to read)."""
    ctx = t.ctx
    n = min(ctx.index.size, shortlist_size(k) + len(exclude))  # type: ignore[union-attr]
    scores, items = ctx.index.search(  # type: ignore[union-attr]
        vector, n, exclude=[np.asarray(history, np.int64)],
        allowed=ctx.eligible if allowed is None else ctx.eligible & allowed)
    keep = items[0] >= 0
    ruled = ruled_list(items[0][keep].astype(np.int64), scores[0][keep].astype(np.float64),
                       facts, rules, k=k, exclude=exclude)
    return [ListedItem(c.item, n, c.score, "sources: ann; anonymous: two-tower score")
            for n, c in enumerate(ruled.items, 1)]


@dataclass(frozen=True)
class ListedItem:
    item: int
    rank: int
    score: float
    why: str | None = None


def known_user_list(t: RequestTables, ranker: Ranker, names: list[str], facts: ItemFacts,
                    rules: RulesConfig, user: int, *, k: int, exclude: Collection[int] = (),
                    allowed: np.ndarray | None = None, early_exit: EarlyExit | None = None,
                    explain: bool = False, shap_trees: int = SHAP_TREES) -> list[ListedItem]:
    """The top `k` of one known user (`exclude`: item indices never to list; `allowed`: a
    mask over items the caller's filters keep)."""
    c = user_candidates(t, user)
    x = feature_matrix(t, c, names)
    items = c.items
    sources = c.source_names() if explain else None
    if allowed is not None:
        keep = allowed[items]
        items, x = items[keep], x[keep]
        sources = None if sources is None else [s for s, ok in zip(sources, keep, strict=True)
                                                 if ok]
    if isinstance(ranker, SourceOrder):
        col = x[:, names.index(ranker.column)]
        scores = np.where(np.isnan(col), -np.inf, col)
    else:
        scores = score_matrix(ranker, x, np.zeros(len(items), np.int64), early_exit)
    ruled = ruled_list(items, scores, facts, rules, k=k, exclude=exclude)
    out = [ListedItem(c_.item, n, c_.score) for n, c_ in enumerate(ruled.items, 1)]
    if not explain:
        return out
    row = {int(i): j for j, i in enumerate(items)}
    chosen = [row[it.item] for it in out]
    texts = ([f"order: {ranker.column}"] * len(out) if isinstance(ranker, SourceOrder) else
             matrix_texts(ranker, x[chosen], names, shap_trees=shap_trees))
    assert sources is not None
    return [ListedItem(it.item, it.rank, it.score, why_text(sources[j], text, note))
            for it, j, text, note in zip(out, chosen, texts, rule_notes(ruled), strict=True)]

