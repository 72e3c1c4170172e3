"""Final product lists: re-ranker scores -> business rules -> top k, each item with why it is
there (its candidate sources, the re-ranker's largest feature contributions, and the rules
that acted on its list).

The rules walk a list in Python (`engine.rules.apply_rules`, one definition for the batch and
the online path), so each user's list is first cut to its best `shortlist` rows by score:
enough for the caps and exclusions to refill the top k, few enough to stay fast at scale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.config import RulesConfig
from engine.rerank.explain import SHAP_TREES, contribution_texts
from engine.rerank.fallback import Ranker, SourceOrder
from engine.rules import Candidate, RuledList, apply_rules, shortlist_size
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class ItemFacts:
    """What the rules read about items, as arrays by item_idx."""

    brand: np.ndarray  # (n_items,) brand index
    category: np.ndarray  # (n_items,) top category index
    eligible: np.ndarray  # (n_items,) bool: may be shown now
    vectors: np.ndarray | None = None  # (n_items, D) unit rows, for MMR diversity

    @classmethod
    def build(
        cls, fs: FeatureSet, eligible: np.ndarray, vectors: np.ndarray | None = None
    ) -> ItemFacts:
        n = fs.vocabs.item.size
        brand, category = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        idx = fs.items["item_idx"].to_numpy()
        brand[idx] = fs.items["brand_idx"].fill_null(-1).to_numpy()
        category[idx] = fs.items["top_category"].fill_null(-1).to_numpy()
        return cls(brand, category, eligible, vectors)


NOT_ELIGIBLE = "not eligible (unavailable or out of flight)"


def score_order_only(rules: RulesConfig, facts: ItemFacts) -> bool:
    """Whether no rule reorders or caps a list (no MMR, no brand or category caps): the
    list is then its eligible rows by score."""
    reorders = rules.mmr_lambda < 1.0 and facts.vectors is not None
    return not (reorders or rules.max_per_brand or rules.max_per_category)


def apply_list_rules(
    items: np.ndarray,
    scores: np.ndarray,
    facts: ItemFacts,
    *,
    k: int,
    rules: RulesConfig,
    exclude: Collection[int] = (),
) -> RuledList:
    """One user's list under the rules: `items` and `scores` aligned, any order."""
    if score_order_only(rules, facts):
        return _by_score(
            np.asarray(items, np.int64), np.asarray(scores, np.float64), facts, k=k, exclude=exclude
        )
    cands = [
        Candidate(int(i), float(s), int(facts.brand[i]), int(facts.category[i]))
        for i, s in zip(items, scores, strict=True)
    ]
    return apply_rules(
        cands, k, rules, exclude=set(exclude), eligible=facts.eligible, vectors=facts.vectors
    )


def _by_score(
    items: np.ndarray, scores: np.ndarray, facts: ItemFacts, *, k: int, exclude: Collection[int]
) -> RuledList:
    """`apply_rules` where no rule reorders or caps the list (no MMR, no caps): what is
    excluded or ineligible is dropped (the first row of a repeated item counts) and the rest
    taken by score, ties to the lower item. The same list and reasons, without a Python
    object per row (a request's 50-row shortlist cost ~0.15 ms that way)."""
    _, first = np.unique(items, return_index=True)
    first.sort()
    items, scores = items[first], scores[first]
    out = (
        np.isin(items, np.fromiter(exclude, np.int64, len(exclude)))
        if exclude
        else np.zeros(len(items), bool)
    )
    eligible = facts.eligible
    inside = (items >= 0) & (items < len(eligible))
    ok = inside.copy()
    ok[inside] = eligible[items[inside]]
    dropped = {int(i): "excluded (seen or asked)" for i in items[out]}
    dropped |= {int(i): NOT_ELIGIBLE for i in items[~out & ~ok]}
    keep = ~out & ok
    items, scores = items[keep], scores[keep]
    top = np.lexsort((items, -scores))[:k]
    chosen = [
        Candidate(int(i), float(v), int(facts.brand[i]), int(facts.category[i]))
        for i, v in zip(items[top], scores[top], strict=True)
    ]
    return RuledList(chosen, dropped)


def rule_notes(ruled: RuledList) -> list[str]:
    """Per chosen item: what the rules did to its list ("brand cap (3 per list) removed 2",
    "moved up by diversity (MMR)"), "" where nothing acted."""
    removed = Counter(r for r in ruled.dropped.values() if not r.startswith("excluded"))
    common = "; ".join(f"{reason} removed {n}" for reason, n in sorted(removed.items()))
    by_score = sorted(
        range(len(ruled.items)), key=lambda j: (-ruled.items[j].score, ruled.items[j].item)
    )
    place = {j: p for p, j in enumerate(by_score)}
    notes = []
    for pos, _ in enumerate(ruled.items):
        moved = (
            "moved up by diversity (MMR)"
            if place[pos] > pos
            else "moved down by diversity (MMR)"
            if place[pos] < pos
            else ""
        )
        notes.append("; ".join(p for p in (common, moved) if p))
    return notes


def product_lists(
    frame: pl.DataFrame,
    scores: np.ndarray,
    facts: ItemFacts,
    *,
    k: int,
    rules: RulesConfig,
    exclude: Mapping[int, Collection[int]] | None = None,
) -> pl.DataFrame:
    """user_idx, rank, item_idx, score, sources, rules: each user's top `k` of `frame` (rows of
    (user_idx, item_idx) candidates) by `scores` under the rules; `exclude[user]` are item
    indices that user must not get (on top of the rules' eligibility)."""
    exclude = exclude or {}
    scored = (
        frame.select(
            "user_idx",
            "item_idx",
            pl.col("sources")
            if "sources" in frame.columns
            else pl.lit(None, pl.String).alias("sources"),
        )
        .with_columns(pl.Series("score", np.asarray(scores, np.float64)))
        .sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
        .group_by("user_idx", maintain_order=True)
        .head(shortlist_size(k))
    )
    users, items = scored["user_idx"].to_numpy(), scored["item_idx"].to_numpy()
    score_col = scored["score"].to_numpy()
    sources = dict(
        zip(
            zip(users.tolist(), items.tolist(), strict=True),
            scored["sources"].to_list(),
            strict=True,
        )
    )
    bounds = np.flatnonzero(np.diff(users)) + 1
    rows: dict[str, list] = {
        c: [] for c in ("user_idx", "rank", "item_idx", "score", "sources", "rules")
    }
    starts = np.r_[0, bounds] if len(users) else np.empty(0, np.int64)
    for a, b in zip(starts, np.r_[bounds, len(users)] if len(users) else starts, strict=True):
        u = int(users[a])
        ruled = apply_list_rules(
            items[a:b], score_col[a:b], facts, k=k, rules=rules, exclude=exclude.get(u, ())
        )
        for rank, (c, note) in enumerate(zip(ruled.items, rule_notes(ruled), strict=True), 1):
            for col, v in (
                ("user_idx", u),
                ("rank", rank),
                ("item_idx", c.item),
                ("score", c.score),
                ("sources", sources[(u, c.item)]),
                ("rules", note),
            ):
                rows[col].append(v)
    return pl.DataFrame(
        rows,
        schema={
            "user_idx": pl.Int64,
            "rank": pl.Int32,
            "item_idx": pl.Int64,
            "score": pl.Float64,
            "sources": pl.String,
            "rules": pl.String,
        },
    )


def with_explanations(
    lists: pl.DataFrame,
    frame: pl.DataFrame,
    booster: Ranker,
    names: list[str],
    *,
    top: int = 3,
    shap_trees: int = SHAP_TREES,
) -> pl.DataFrame:
    """`lists` with a `why` column: "sources: ann,covisit; two_tower +0.41, count_7d +0.12;
    rules: brand cap (3 per list) removed 1". Contributions are computed for the listed rows
    only (k per user, not every candidate), the first `shap_trees` trees with TreeSHAP and
    the rest by their decision paths (`[rerank] explain_shap_trees`, `engine.rerank.explain`)."""
    if isinstance(booster, SourceOrder):  # no model to attribute: the order says it all
        texts = [f"order: {booster.column}"] * lists.height
    else:
        rows = lists.select("user_idx", "item_idx").join(
            frame, on=["user_idx", "item_idx"], how="left", maintain_order="left"
        )
        texts = contribution_texts(booster, rows, names, top=top, shap_trees=shap_trees)
    return lists.with_columns(
        pl.Series(
            "why",
            [
                why_text(s, t, r)
                for s, t, r in zip(
                    lists["sources"].to_list(), texts, lists["rules"].to_list(), strict=True
                )
            ],
        )
    )


def why_text(sources: str | None, contributions: str, rules: str) -> str:
    """ "sources: ann,covisit; two_tower +0.41, count_7d +0.12; rules: brand cap ... removed 1"."""
    return "; ".join(
        p for p in (f"sources: {sources or '-'}", contributions, rules and f"rules: {rules}") if p
    )
