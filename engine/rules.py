"""Business rules applied to one scored candidate list, each recording what it did.

Order of application (`apply_rules`): drop excluded and ineligible items, drop duplicates
(first occurrence wins), then fill the top k greedily by score, optionally trading score for
diversity (MMR over item vectors), while holding at most `max_per_brand` / `max_per_category`
items of one brand / category in the top k. `mix_ads` puts ads into a product list at
configured slots; `allocate_slots` only where an ad is worth more than the organic item it
displaces. Every item removed or passed over gets a reason, so the final list can say why it
looks the way it does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.config import RulesConfig


@dataclass(frozen=True)
class Candidate:
    """One scored item of a list."""

    item: int
    score: float
    brand: int | None = None
    category: int | None = None


@dataclass
class RuledList:
    """The final items, best first, and why others are not there (or moved)."""

    items: list[Candidate]
    dropped: dict[int, str] = field(default_factory=dict)  # item -> the rule that removed it


def shortlist_size(k: int) -> int:
    """Rows per user the rules see: the top k five times over, and never fewer than 50."""
    return max(5 * k, 50)


def apply_rules(
    cands: list[Candidate],
    k: int,
    cfg: RulesConfig,
    *,
    exclude: set[int] | frozenset[int] = frozenset(),
    eligible: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
) -> RuledList:
    """The top `k` of `cands` under the rules; `vectors[item]` (unit rows) are needed for MMR."""
    dropped: dict[int, str] = {}
    seen_items: set[int] = set()
    pool: list[Candidate] = []
    for c in cands:
        if c.item in exclude:
            dropped[c.item] = "excluded (seen or asked)"
        elif eligible is not None and not (0 <= c.item < len(eligible) and eligible[c.item]):
            dropped[c.item] = "not eligible (unavailable or out of flight)"
        elif c.item in seen_items:
            continue  # a duplicate of an item already in the pool
        else:
            seen_items.add(c.item)
            pool.append(c)
    pool.sort(key=lambda c: (-c.score, c.item))
    mmr_vectors = vectors if cfg.mmr_lambda < 1.0 else None  # None: no MMR
    chosen: list[Candidate] = []
    brands: Counter[int] = Counter()
    cats: Counter[int] = Counter()
    while pool and len(chosen) < k:
        pick = _best(pool, chosen, cfg.mmr_lambda, mmr_vectors) if mmr_vectors is not None else 0
        c = pool.pop(pick)
        if cfg.max_per_brand and c.brand is not None and brands[c.brand] >= cfg.max_per_brand:
            dropped[c.item] = f"brand cap ({cfg.max_per_brand} per list)"
            continue
        if (
            cfg.max_per_category
            and c.category is not None
            and cats[c.category] >= cfg.max_per_category
        ):
            dropped[c.item] = f"category cap ({cfg.max_per_category} per list)"
            continue
        if c.brand is not None:
            brands[c.brand] += 1
        if c.category is not None:
            cats[c.category] += 1
        chosen.append(c)
    return RuledList(chosen, dropped)


def _best(pool: list[Candidate], chosen: list[Candidate], lam: float, vectors: np.ndarray) -> int:
    """Index in `pool` of the candidate maximising lam * score - (1 - lam) * max similarity
    to the chosen items (scores min-max scaled to [0, 1] so the two terms compare)."""
    scores = np.array([c.score for c in pool])
    span = scores.max() - scores.min()
    rel = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    if not chosen:
        return int(np.argmax(rel))
    sim = (vectors[[c.item for c in pool]] @ vectors[[c.item for c in chosen]].T).max(axis=1)
    return int(np.argmax(lam * rel - (1.0 - lam) * sim))


def mix_ads(
    products: list[Candidate], ads: list[Candidate], slots: tuple[int, ...], k: int
) -> list[tuple[str, Candidate]]:
    """A mixed list of length <= k: ads at the given 0-based slots (in ad order, as many as
    there are ads), products everywhere else, each tagged "product" or "ad"."""
    out: list[tuple[str, Candidate]] = []
    p, a = iter(products), iter(ads)
    slot_set = set(slots)
    while len(out) < k:
        source, kind = (a, "ad") if len(out) in slot_set else (p, "product")
        item = next(source, None)
        if item is None and kind == "ad":  # no ad left: the slot goes to a product
            source, kind = p, "product"
            item = next(p, None)
        if item is None:
            break
        out.append((kind, item))
    return out


def allocate_slots(
    products: list[Candidate],
    ads: list[tuple[Candidate, float]],
    k: int,
    *,
    exchange_rate: float,
    max_ads: int,
) -> list[tuple[str, Candidate]]:
    """A mixed list where ads take a slot only when they are worth more than the organic item
    they would push out of the list.

    `ads` are (ad, expected revenue per impression, i.e. pCTR x bid), best first; an organic
    item's value is its score x `exchange_rate` (revenue per unit of score). Walking the list
    top-down, the next ad goes in at a position when its revenue exceeds the value of the last
    organic item still in the list (the one the ad would displace), at most `max_ads` times.
    """
    organic = list(products[:k])
    queue = list(ads)
    out: list[tuple[str, Candidate]] = []
    placed = 0
    while len(out) < k and (organic or queue):
        if queue and placed < max_ads and organic:
            ad, revenue = queue[0]
            displaced = organic[-1] if len(out) + len(organic) >= k else None
            if displaced is None or revenue > displaced.score * exchange_rate:
                queue.pop(0)
                if displaced is not None:
                    organic.pop()
                out.append(("ad", ad))
                placed += 1
                continue
        if organic:
            out.append(("product", organic.pop(0)))
        elif queue and placed < max_ads:
            ad, _ = queue.pop(0)
            out.append(("ad", ad))
            placed += 1
        else:
            break
    return out
