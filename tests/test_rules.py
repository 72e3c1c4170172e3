"""Business rules, as properties over random lists: excluded, ineligible and duplicate items
never appear, brand and category caps hold, the list is as long as the rules allow and sorted
by score without MMR; MMR picks less similar items; ads land in their slots."""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings

from engine.config import RulesConfig
from engine.rules import Candidate, apply_rules, mix_ads

candidates = st.lists(
    st.builds(
        Candidate,
        item=st.integers(0, 60),
        score=st.floats(-5, 5, allow_nan=False),
        brand=st.one_of(st.none(), st.integers(0, 4)),
        category=st.one_of(st.none(), st.integers(0, 3)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    cands=candidates,
    k=st.integers(1, 30),
    exclude=st.sets(st.integers(0, 60), max_size=15),
    brand_cap=st.one_of(st.none(), st.integers(1, 3)),
    cat_cap=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 1000),
)
def test_rules_are_never_violated(cands, k, exclude, brand_cap, cat_cap, seed) -> None:
    eligible = np.random.default_rng(seed).random(61) > 0.2
    cfg = RulesConfig(max_per_brand=brand_cap, max_per_category=cat_cap)
    out = apply_rules(cands, k, cfg, exclude=exclude, eligible=eligible)
    items = [c.item for c in out.items]
    assert len(items) == len(set(items)) <= k
    assert not set(items) & exclude
    assert all(eligible[i] for i in items)
    if brand_cap:
        assert (
            max(Counter(c.brand for c in out.items if c.brand is not None).values(), default=0)
            <= brand_cap
        )
    if cat_cap:
        assert (
            max(
                Counter(c.category for c in out.items if c.category is not None).values(), default=0
            )
            <= cat_cap
        )
    scores = [c.score for c in out.items]
    assert scores == sorted(scores, reverse=True)
    usable = {c.item for c in cands if c.item not in exclude and eligible[c.item]}
    if not brand_cap and not cat_cap:
        assert len(items) == min(k, len(usable))
    for item in {c.item for c in cands} - set(items):
        if item in exclude or not eligible[item]:
            assert item in out.dropped


def test_mmr_trades_score_for_diversity() -> None:
    vectors = np.array([[1, 0], [1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cands = [Candidate(0, 1.0), Candidate(1, 0.95), Candidate(2, 0.9), Candidate(3, 0.5)]
    plain = apply_rules(cands, 2, RulesConfig(), vectors=vectors)
    assert [c.item for c in plain.items] == [0, 1]
    diverse = apply_rules(cands, 2, RulesConfig(mmr_lambda=0.3), vectors=vectors)
    assert [c.item for c in diverse.items] == [0, 3]


def test_ads_go_to_their_slots() -> None:
    products = [Candidate(i, 1.0 - i / 10) for i in range(10)]
    ads = [Candidate(100, 0.0), Candidate(101, 0.0)]
    mixed = mix_ads(products, ads, (1, 4, 6), 8)
    assert [kind for kind, _ in mixed] == [
        "product",
        "ad",
        "product",
        "product",
        "ad",
        "product",
        "product",
        "product",
    ]
    assert [c.item for _, c in mixed] == [0, 100, 1, 2, 101, 3, 4, 5]
    assert len(mix_ads(products[:2], [], (0,), 5)) == 2


@settings(max_examples=150, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1), min_size=0, max_size=15),
    revenues=st.lists(st.floats(0, 1), max_size=6),
    k=st.integers(1, 12),
    rate=st.floats(0.01, 2),
    max_ads=st.integers(0, 4),
)
def test_ads_only_displace_less_valuable_organic_items(scores, revenues, k, rate, max_ads) -> None:
    from engine.rules import allocate_slots

    products = [Candidate(i, s) for i, s in enumerate(sorted(scores, reverse=True))]
    ads = [(Candidate(1000 + i, 0.0), r) for i, r in enumerate(sorted(revenues, reverse=True))]
    mixed = allocate_slots(products, ads, k, exchange_rate=rate, max_ads=max_ads)
    kinds = [kind for kind, _ in mixed]
    assert len(mixed) <= k and kinds.count("ad") <= max_ads
    shown = [c for kind, c in mixed if kind == "product"]
    assert shown == products[: len(shown)], "organic order is kept"
    revenue = {c.item: r for c, r in ads}
    dropped = products[len(shown) : k]
    for kind, c in mixed:
        if kind == "ad" and dropped:
            assert revenue[c.item] > min(p.score for p in dropped) * rate
    if len(products) >= k and max_ads and ads and ads[0][1] <= products[k - 1].score * rate:
        assert "ad" not in kinds  # no ad is worth the last organic slot
