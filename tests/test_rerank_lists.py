"""Final product lists: the rules are never violated whatever the scores (excluded and
ineligible items never appear, caps hold, ranks run 1..n, no padding), the list is the score
order when no rule acts, and every item says why it is there."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RulesConfig
from engine.rerank.config import RerankConfig
from engine.rerank.lists import (
    ItemFacts,
    apply_list_rules,
    product_lists,
    rule_notes,
    with_explanations,
)
from engine.rerank.ranker import RankData, train_ranker
from engine.rules import Candidate, RuledList

N_ITEMS = 40


def facts(seed: int) -> ItemFacts:
    rng = np.random.default_rng(seed)
    eligible = rng.random(N_ITEMS) > 0.2
    eligible[0] = False
    vec = rng.normal(size=(N_ITEMS, 4))
    return ItemFacts(
        brand=rng.integers(0, 4, N_ITEMS),
        category=rng.integers(0, 3, N_ITEMS),
        eligible=eligible,
        vectors=vec / np.linalg.norm(vec, axis=1, keepdims=True),
    )


def candidates(seed: int, users: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = [
        (u, int(i))
        for u in range(1, users + 1)
        for i in rng.choice(np.arange(1, N_ITEMS), rng.integers(1, 30), replace=False)
    ]
    frame = pl.DataFrame(rows, schema={"user_idx": pl.Int64, "item_idx": pl.Int64}, orient="row")
    frame = frame.with_columns(pl.lit("ann").alias("sources"))
    return frame, rng.normal(size=frame.height)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 15),
    brand=st.one_of(st.none(), st.integers(1, 3)),
    category=st.one_of(st.none(), st.integers(1, 4)),
    mmr=st.sampled_from([1.0, 0.7, 0.3]),
)
def test_rules_are_never_violated(
    seed: int, k: int, brand: int | None, category: int | None, mmr: float
) -> None:
    f = facts(seed)
    frame, scores = candidates(seed, users=5)
    exclude = {
        u: set(np.random.default_rng(seed + u).choice(N_ITEMS, 5).tolist()) for u in range(1, 6)
    }
    rules = RulesConfig(max_per_brand=brand, max_per_category=category, mmr_lambda=mmr)
    lists = product_lists(frame, scores, f, k=k, rules=rules, exclude=exclude)
    for (u,), got in lists.group_by("user_idx"):
        items = got.sort("rank")["item_idx"].to_numpy()
        assert got.sort("rank")["rank"].to_list() == list(range(1, len(items) + 1))
        assert len(items) <= k and len(set(items.tolist())) == len(items)
        assert f.eligible[items].all()
        assert not set(items.tolist()) & exclude[u]
        assert set(items.tolist()) <= set(frame.filter(pl.col("user_idx") == u)["item_idx"])
        if brand:
            assert np.bincount(f.brand[items]).max() <= brand
        if category:
            assert np.bincount(f.category[items]).max() <= category
    if brand is None and category is None:  # nothing caps: every allowed candidate fits up to k
        allowed = frame.with_columns(pl.Series("s", scores)).filter(
            pl.col("item_idx").map_elements(lambda i: bool(f.eligible[i]), return_dtype=pl.Boolean)
        )
        for u in range(1, 6):
            mine = allowed.filter(
                (pl.col("user_idx") == u) & ~pl.col("item_idx").is_in(list(exclude[u]))
            )
            assert lists.filter(pl.col("user_idx") == u).height == min(k, mine.height)


def test_without_rules_the_list_is_the_score_order() -> None:
    f = facts(1)
    frame, scores = candidates(1, users=8)
    lists = product_lists(frame, scores, f, k=10, rules=RulesConfig())
    scored = frame.with_columns(pl.Series("score", scores)).filter(
        pl.col("item_idx").map_elements(lambda i: bool(f.eligible[i]), return_dtype=pl.Boolean)
    )
    for u in range(1, 9):
        want = (
            scored.filter(pl.col("user_idx") == u)
            .sort("score", descending=True)
            .head(10)["item_idx"]
            .to_list()
        )
        got = lists.filter(pl.col("user_idx") == u).sort("rank")["item_idx"].to_list()
        assert got == want
    # the only rule that acted is eligibility, and the notes say so
    assert lists["rules"].str.contains("cap|MMR").not_().all()
    assert lists["rules"].str.contains("not eligible").any()


def test_rule_notes_say_what_acted() -> None:
    ruled = RuledList(
        [Candidate(3, 0.5), Candidate(1, 0.9)],
        {7: "brand cap (2 per list)", 8: "brand cap (2 per list)", 9: "excluded (seen or asked)"},
    )
    notes = rule_notes(ruled)
    assert notes[0] == "brand cap (2 per list) removed 2; moved up by diversity (MMR)"
    assert notes[1] == "brand cap (2 per list) removed 2; moved down by diversity (MMR)"


def test_explanations_name_sources_features_and_rules() -> None:
    rng = np.random.default_rng(0)
    frame, _ = candidates(2, users=20)
    frame = frame.with_columns(
        pl.Series("a", rng.normal(size=frame.height)), pl.Series("b", rng.normal(size=frame.height))
    )
    y = (frame["b"].to_numpy() > 0.8).astype(float)
    group = frame.group_by("user_idx", maintain_order=True).len()["len"].to_numpy()
    booster = train_ranker(
        RankData(frame.select("a", "b").to_numpy(), y, group),
        ["a", "b"],
        RerankConfig(num_boost_round=20, min_data_in_leaf=5),
    )
    scores = booster.predict(frame.select("a", "b").to_numpy())
    lists = product_lists(frame, scores, facts(2), k=3, rules=RulesConfig(max_per_brand=1))
    lists = with_explanations(lists, frame, booster, ["a", "b"], top=2)
    assert lists.height > 0
    for why, rules in zip(lists["why"].to_list(), lists["rules"].to_list(), strict=True):
        assert why.startswith("sources: ann; ")
        assert " b " in f" {why}" or "a " in why
        assert (rules == "") or why.endswith(f"rules: {rules}")


def test_no_candidates_give_an_empty_list() -> None:
    frame, _ = candidates(3, users=2)
    empty = product_lists(frame.head(0), np.empty(0), facts(3), k=5, rules=RulesConfig())
    assert empty.height == 0 and empty.columns[:4] == ["user_idx", "rank", "item_idx", "score"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 45), st.sampled_from([0.0, 0.5, 1.0, 2.5, -1.0])), max_size=60
    ),
    st.sets(st.integers(0, 45), max_size=10),
    st.integers(1, 12),
    st.integers(0, 2**31),
)
def test_a_list_no_rule_reorders_is_the_rules_list(
    rows: list[tuple[int, float]], exclude: set[int], k: int, seed: int
) -> None:
    """Without MMR or caps a list's rules are taken over arrays: the same items, scores and
    reasons as `apply_rules` walking the candidates (repeats, ties, exclusions, ineligible
    items and ids past the catalogue included)."""
    from engine.rules import apply_rules

    rng = np.random.default_rng(seed)
    facts = ItemFacts(
        brand=rng.integers(-1, 4, 42),
        category=rng.integers(-1, 3, 42),
        eligible=rng.random(42) < 0.8,
    )
    items = np.array([i for i, _ in rows], np.int64)
    scores = np.array([s for _, s in rows])
    rules = RulesConfig()
    got = apply_list_rules(items, scores, facts, k=k, rules=rules, exclude=exclude)
    cands = [
        Candidate(
            int(i),
            float(s),
            int(facts.brand[i]) if i < 42 else -1,
            int(facts.category[i]) if i < 42 else -1,
        )
        for i, s in rows
    ]
    want = apply_rules(cands, k, rules, exclude=exclude, eligible=facts.eligible)
    assert got.items == want.items
    assert got.dropped == want.dropped
