"""The hidden latent world: category tree, brands, items, ads and users with their factors.

Utility of item i for user u at time t (the ground truth the oracle ranks by)::

    util(u, i, t) = (p_u + f(t) * d_u) . q_i / tau + b_i,   f(t) = (t - t0) / (t1 - t0)

p_u comes from the user's attributes and favourite top category, d_u is the drift, q_i comes from
the item's leaf category and brand, b_i is a power-law popularity bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOPS = (
    "electronics",
    "home",
    "fashion",
    "beauty",
    "sports",
    "toys",
    "grocery",
    "books",
    "garden",
    "auto",
)
MIDS = ("basics", "premium", "outdoor", "kids", "tools", "accessories", "classic", "smart")
ADJECTIVES = (
    "red",
    "blue",
    "black",
    "white",
    "green",
    "steel",
    "wooden",
    "cotton",
    "leather",
    "organic",
    "compact",
    "large",
    "mini",
    "pro",
    "ultra",
    "classic",
    "modern",
    "vintage",
    "smart",
    "wireless",
    "portable",
    "eco",
    "deluxe",
    "light",
    "heavy",
    "soft",
    "rugged",
    "slim",
    "fast",
    "quiet",
    "bright",
    "warm",
    "cool",
    "fresh",
    "sweet",
    "spicy",
    "bold",
    "gentle",
    "premium",
    "budget",
    "family",
    "travel",
    "sport",
    "studio",
    "home",
    "garden",
    "kids",
    "urban",
    "retro",
    "luxury",
)
BRAND_SYLLABLES = ("ka", "lo", "mi", "ra", "zen", "tor", "vex", "qui", "sol", "nor", "bel", "dax")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("f", "m", "u")
COUNTRIES = ("us", "gb", "de", "fr", "es", "it", "nl", "se", "pl", "br", "in", "jp")


@dataclass(frozen=True)
class World:
    """Arrays of the hidden model; index i is the i-th item / user in the output tables."""

    dim: int
    tau: float
    leaf_vecs: np.ndarray  # (L, d)
    leaf_top: np.ndarray  # (L,) top-category index of each leaf
    leaf_names: list[str]  # "top>mid>leaf"
    item_leaf: np.ndarray  # (I,)
    item_brand: np.ndarray  # (I,)
    item_vecs: np.ndarray  # (I, d) q_i
    item_bias: np.ndarray  # (I,) b_i
    item_is_ad: np.ndarray  # (I,) bool
    brand_names: list[str]
    user_vecs: np.ndarray  # (U, d) p_u
    user_drift: np.ndarray  # (U, d) d_u
    user_top: np.ndarray  # (U,) favourite top category
    user_attrs: dict[str, np.ndarray]  # attribute name -> (U,) value index


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    syl = np.array(BRAND_SYLLABLES)
    parts = rng.integers(0, len(syl), size=(n, 3))
    names = ["".join(syl[p]) for p in parts]
    return [f"{name}{i}" for i, name in enumerate(names)]  # suffix keeps them unique


def build_world(
    n_users: int, n_items: int, *, ad_share: float, dim: int, tau: float, rng: np.random.Generator
) -> World:
    """Draw the latent model for `n_users` users and `n_items` items (a share of them ads)."""
    n_top, n_mid, n_leaf = len(TOPS), 4, 4
    top_vecs = rng.normal(0, 1.0, (n_top, dim))
    mid_vecs = np.repeat(top_vecs, n_mid, 0) + rng.normal(0, 0.5, (n_top * n_mid, dim))
    leaf_vecs = np.repeat(mid_vecs, n_leaf, 0) + rng.normal(0, 0.35, (n_top * n_mid * n_leaf, dim))
    leaf_top = np.repeat(np.arange(n_top), n_mid * n_leaf)
    leaf_names = []
    for t in range(n_top):
        mids = rng.choice(len(MIDS), n_mid, replace=False)
        for m in mids:
            for leaf in range(n_leaf):
                leaf_names.append(f"{TOPS[t]}>{MIDS[m]}>{MIDS[m]}-{leaf + 1}")
    n_l = len(leaf_names)

    # Items: Zipf-sized categories, brands tied to a top category, power-law popularity.
    leaf_p = 1.0 / np.arange(1, n_l + 1) ** 0.8
    leaf_p = rng.permutation(leaf_p / leaf_p.sum())
    item_leaf = rng.choice(n_l, n_items, p=leaf_p)
    n_brands = max(8, n_items // 150)
    brand_top = rng.integers(0, n_top, n_brands)
    brand_vecs = rng.normal(0, 0.35, (n_brands, dim))
    brand_quality = rng.normal(0, 0.5, n_brands)
    # A brand is mostly used inside its own top category.
    by_top = [np.flatnonzero(brand_top == t) for t in range(n_top)]
    item_top = leaf_top[item_leaf]
    item_brand = rng.integers(0, n_brands, n_items)
    own = rng.random(n_items) < 0.85
    for t in range(n_top):
        sel = np.flatnonzero(own & (item_top == t))
        if len(by_top[t]) and len(sel):
            item_brand[sel] = rng.choice(by_top[t], len(sel))
    item_vecs = leaf_vecs[item_leaf] + brand_vecs[item_brand] + rng.normal(0, 0.45, (n_items, dim))
    item_vecs /= np.sqrt(dim) ** 0.5
    item_bias = rng.normal(0, 1.3, n_items) + 0.5 * brand_quality[item_brand]
    item_is_ad = rng.random(n_items) < ad_share

    # Users: attributes shape the favourite top category and the taste vector.
    attrs = {
        "age_bucket": rng.choice(len(AGE_BUCKETS), n_users, p=[0.12, 0.28, 0.24, 0.17, 0.12, 0.07]),
        "gender": rng.choice(len(GENDERS), n_users, p=[0.48, 0.47, 0.05]),
        "country": rng.choice(len(COUNTRIES), n_users),
    }
    attr_vecs = {
        "age_bucket": rng.normal(0, 0.6, (len(AGE_BUCKETS), dim)),
        "gender": rng.normal(0, 0.6, (len(GENDERS), dim)),
        "country": rng.normal(0, 0.3, (len(COUNTRIES), dim)),
    }
    base = sum(attr_vecs[k][v] for k, v in attrs.items())
    top_logits = base @ top_vecs.T / np.sqrt(dim) + rng.gumbel(size=(n_users, n_top))
    user_top = top_logits.argmax(1)
    user_vecs = base + 1.2 * top_vecs[user_top] + rng.normal(0, 0.8, (n_users, dim))
    user_vecs /= np.sqrt(dim) ** 0.5
    user_drift = rng.normal(0, 0.45, (n_users, dim)) / np.sqrt(dim) ** 0.5
    return World(
        dim=dim,
        tau=tau,
        leaf_vecs=leaf_vecs / np.sqrt(dim) ** 0.5,
        leaf_top=leaf_top,
        leaf_names=leaf_names,
        item_leaf=item_leaf,
        item_brand=item_brand,
        item_vecs=item_vecs.astype(np.float32),
        item_bias=item_bias.astype(np.float32),
        item_is_ad=item_is_ad,
        brand_names=_brand_names(n_brands, rng),
        user_vecs=user_vecs.astype(np.float32),
        user_drift=user_drift.astype(np.float32),
        user_top=user_top,
        user_attrs=attrs,
    )


def item_titles(world: World, rng: np.random.Generator) -> list[str]:
    """Titles whose words carry content signal: brand, two adjectives that match the item's
    taste vector, and the leaf category's word."""
    adj_vecs = rng.normal(0, 1, (len(ADJECTIVES), world.dim)).astype(np.float32)
    scores = world.item_vecs @ adj_vecs.T + rng.gumbel(size=(len(world.item_leaf), len(ADJECTIVES)))
    top2 = np.argpartition(-scores, 2, axis=1)[:, :2]
    adj = np.array(ADJECTIVES)
    leaf_word = np.array([n.rsplit(">", 1)[1].split("-")[0] for n in world.leaf_names])
    brands = np.array(world.brand_names)
    a0, a1 = adj[top2[:, 0]], adj[top2[:, 1]]
    b = brands[world.item_brand]
    w = leaf_word[world.item_leaf]
    return [f"{x} {y} {z} {v}" for x, y, z, v in zip(b, a0, a1, w, strict=True)]


@dataclass(frozen=True)
class Chains:
    """Series and complements of the bursty world: products grouped into ordered chains (a
    phone, its case, its charger; volume 1, 2, 3 of a series). After a view of an item, the
    user's next pick is its successor with probability `follow` (see `events.follow_chains`)."""

    chain: np.ndarray  # (I,) chain id, -1 for items in no chain (ads, loners)
    position: np.ndarray  # (I,) 0-based place in the chain, -1 outside chains
    successor: np.ndarray  # (I,) next item of the chain, -1 for the last one and outside chains
    follow: float


def build_chains(
    world: World, *, share: float, max_len: int, follow: float, rng: np.random.Generator
) -> Chains:
    """Cut a `share` of the products of each top category, in random order, into chains of 2 to
    `max_len` items (members may sit in different leaves of that top category: complements)."""
    n = len(world.item_vecs)
    chain, position, successor = np.full(n, -1), np.full(n, -1), np.full(n, -1)
    item_top = world.leaf_top[world.item_leaf]
    in_chain = (~world.item_is_ad) & (rng.random(n) < share)
    next_id = 0
    for t in range(int(world.leaf_top.max()) + 1):
        members = rng.permutation(np.flatnonzero(in_chain & (item_top == t)))
        sizes = rng.integers(2, max_len + 1, max(1, len(members) // 2))
        ends = np.cumsum(sizes)
        ends = ends[ends < len(members)]
        bounds = np.concatenate([[0], ends, [len(members)]])
        if bounds[-1] - bounds[-2] < 2:  # a leftover single item stays out of chains
            members, bounds = members[:-1], bounds[:-1]
        if len(members) < 2:
            continue
        k = np.arange(len(members))
        local = np.searchsorted(bounds, k, side="right") - 1  # chain of each member
        chain[members] = next_id + local
        position[members] = k - bounds[local]
        same = local[1:] == local[:-1]
        successor[members[:-1][same]] = members[1:][same]
        next_id += len(bounds) - 1
    return Chains(chain=chain, position=position, successor=successor, follow=follow)
