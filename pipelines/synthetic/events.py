"""Behaviour sampled from the latent world: browsing sessions with a purchase funnel, and logged
product impressions with clicks.

A session has one intent (a leaf category drawn from the user's taste at that time); each view
in it picks an item of that category by sampling-importance-resampling: candidates drawn by
popularity, one kept with probability ∝ exp(taste . q / tau). Items not yet created at the
view's time are never chosen. Views turn into add-to-cart and purchase with a probability that
rises with utility; impressions shown by popularity turn into clicks the same way.

Activity is weekly (each event at a uniform time of the user's whole tenure) or bursty (each
event inside one of the user's 1-3 bursts of a day or two, placed at random over the span; see
`Timeline`). In the bursty world, products also form chains (`world.Chains`): after a view, the
user's next view (same burst or a later one) is the successor of the viewed item with
probability `follow`, else the usual pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.sampling import GroupedAlias, gumbel_argmax
from pipelines.synthetic.world import Chains, World

VIEW, CLICK, CART, PURCHASE, IMPRESSION = 0, 1, 2, 3, 4
EVENT_NAMES = ("view", "click", "add_to_cart", "purchase", "impression")
CANDIDATES = 8
CHUNK = 400_000


@dataclass
class Events:
    """Columns of sampled interaction rows (times in seconds since the span start)."""

    user: np.ndarray
    item: np.ndarray
    t: np.ndarray
    event: np.ndarray
    value: np.ndarray
    propensity: np.ndarray

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        return Events(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("user", "item", "t", "event", "value", "propensity")
            )
        )


@dataclass(frozen=True)
class Bursts:
    """The bursts of a bursty timeline: each user's runs of activity."""

    first: np.ndarray  # (U,) the user's first row in `start`
    count: np.ndarray  # (U,) the user's number of bursts (1..)
    start: np.ndarray  # (B,) seconds, grouped by user
    length: np.ndarray  # (B,) seconds; a burst ends by span - 4 h


@dataclass(frozen=True)
class Timeline:
    """When each user and item exists, and the span's length in seconds."""

    span: float
    user_from: np.ndarray  # (U,) seconds: max(0, signup)
    item_from: np.ndarray  # (I,) seconds: created (may be < 0)
    activity: np.ndarray  # (U,) relative activity, sums to 1
    bursts: Bursts | None = None  # bursty activity: when each user is active


def taste(world: World, users: np.ndarray, t: np.ndarray, span: float) -> np.ndarray:
    """Users' taste vectors at times `t`: p_u + f(t) d_u, shape (n, d)."""
    f = (t / span).astype(np.float32)[:, None]
    return world.user_vecs[users] + f * world.user_drift[users]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def when(users: np.ndarray, tl: Timeline, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random time for an event of each user (at least `margin` seconds before the end):
    uniform over the user's tenure, or, with bursts, uniform inside one of the user's bursts."""
    bursts = tl.bursts
    if bursts is None:
        lo = tl.user_from[users]
        return lo + rng.random(len(users)) * np.maximum(tl.span - margin - lo, 0.0)
    b = bursts.first[users] + (rng.random(len(users)) * bursts.count[users]).astype(np.int64)
    return bursts.start[b] + rng.random(len(users)) * bursts.length[b]


def follow_chains(
    user: np.ndarray,
    item: np.ndarray,
    t: np.ndarray,
    successor: np.ndarray,
    item_from: np.ndarray,
    follow: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Items of views after the chain step: in each user's time order, a view becomes the
    successor of the user's previous view with probability `follow` (when that item has a
    successor that exists by then). Returns the new item column."""
    order = np.lexsort((t, user))
    u, it, tt = user[order], item[order].copy(), t[order]
    n = len(u)
    if n < 2:
        return item.copy()
    heads = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    pos = np.arange(n) - np.repeat(heads, np.diff(np.r_[heads, n]))
    go = rng.random(n) < follow
    by_pos = np.argsort(pos, kind="stable")
    cuts = np.searchsorted(pos[by_pos], np.arange(pos.max() + 2))
    for p in range(1, int(pos.max()) + 1):  # position p depends on the result at p - 1
        cur = by_pos[cuts[p] : cuts[p + 1]]
        cur = cur[go[cur]]
        nxt = successor[it[cur - 1]]
        ok = nxt >= 0
        ok[ok] = item_from[nxt[ok]] <= tt[cur[ok]]
        it[cur[ok]] = nxt[ok]
    out = np.empty_like(item)
    out[order] = it
    return out


def sample_sessions(
    world: World,
    tl: Timeline,
    prices: np.ndarray,
    n_views: int,
    rng: np.random.Generator,
    chains: Chains | None = None,
) -> Events:
    """Browsing sessions: views, then add-to-cart and purchase rows for some of them. With
    `chains`, views follow the item chains (`follow_chains`) before the funnel is drawn."""
    products = np.flatnonzero(~world.item_is_ad)
    n_leaf = len(world.leaf_names)
    leaf_of = world.item_leaf[products]
    alias = GroupedAlias.build(leaf_of, np.exp(world.item_bias[products]), n_leaf)
    mass = np.bincount(leaf_of, weights=np.exp(world.item_bias[products]), minlength=n_leaf)
    log_mass = np.log(np.maximum(mass, 1e-12)).astype(np.float32)
    leaf_vecs = world.leaf_vecs.astype(np.float32)

    lengths = np.minimum(1 + rng.geometric(0.25, size=max(1, n_views // 5)), 30)
    n_sessions = len(lengths)
    s_user = rng.choice(len(tl.activity), n_sessions, p=tl.activity)
    s_start = when(s_user, tl, rng, margin=3 * 3600)
    s_leaf = np.empty(n_sessions, np.int64)
    for a in range(0, n_sessions, CHUNK):
        b = min(a + CHUNK, n_sessions)
        logits = taste(world, s_user[a:b], s_start[a:b], tl.span) @ leaf_vecs.T / world.tau
        s_leaf[a:b] = gumbel_argmax(logits + log_mass, rng)
    s_leaf = np.where(mass[s_leaf] > 0, s_leaf, leaf_of[0])

    sess = np.repeat(np.arange(n_sessions), lengths)
    offset = np.arange(len(sess)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    user = s_user[sess]
    t = s_start[sess] + offset * 60.0 + rng.exponential(40.0, len(sess))
    item = np.empty(len(sess), np.int64)
    ok = np.empty(len(sess), bool)
    for a in range(0, len(sess), CHUNK):
        b = min(a + CHUNK, len(sess))
        cand = products[alias.sample(s_leaf[sess[a:b]], CANDIDATES, rng)]
        tv = taste(world, user[a:b], t[a:b], tl.span)
        logits = np.einsum("nd,nkd->nk", tv, world.item_vecs[cand]) / world.tau
        alive = tl.item_from[cand] <= t[a:b, None]
        logits = np.where(alive, logits, -np.inf)
        pick = gumbel_argmax(logits, rng)
        item[a:b] = cand[np.arange(b - a), pick]
        ok[a:b] = alive.any(1)
    user, item, t = user[ok], item[ok], t[ok]
    if chains is not None:
        item = follow_chains(user, item, t, chains.successor, tl.item_from, chains.follow, rng)
    views = Events(
        user,
        item,
        t,
        np.full(len(user), VIEW, np.int8),
        np.full(len(user), np.nan),
        np.full(len(user), np.nan),
    )

    personal = (
        np.einsum("nd,nd->n", taste(world, user, t, tl.span), world.item_vecs[item]) / world.tau
    )
    p_cart = _sigmoid(0.7 * personal + 0.3 * world.item_bias[item] - 5.0)
    cart = rng.random(len(user)) < p_cart
    buy = cart & (rng.random(len(user)) < 0.4)
    carts = Events(
        user[cart],
        item[cart],
        t[cart] + 30.0,
        np.full(cart.sum(), CART, np.int8),
        np.full(cart.sum(), np.nan),
        np.full(cart.sum(), np.nan),
    )
    buys = Events(
        user[buy],
        item[buy],
        t[buy] + 120.0,
        np.full(buy.sum(), PURCHASE, np.int8),
        prices[item[buy]],
        np.full(buy.sum(), np.nan),
    )
    return Events.concat([views, carts, buys])


def sample_impressions(world: World, tl: Timeline, n: int, rng: np.random.Generator) -> Events:
    """Product impressions shown by a popularity policy, and the clicks they got."""
    products = np.flatnonzero(~world.item_is_ad)
    alias = GroupedAlias.build(
        np.zeros(len(products), np.int64), np.exp(world.item_bias[products]), 1
    )
    user = rng.choice(len(tl.activity), n, p=tl.activity)
    t = when(user, tl, rng, margin=60.0)
    item = products[alias.sample(np.zeros(n, np.int64), 1, rng)[:, 0]]
    ok = tl.item_from[item] <= t
    user, item, t = user[ok], item[ok], t[ok]
    personal = (
        np.einsum("nd,nd->n", taste(world, user, t, tl.span), world.item_vecs[item]) / world.tau
    )
    click = rng.random(len(user)) < _sigmoid(personal + 0.3 * world.item_bias[item] - 3.5)
    nan = np.full(len(user), np.nan)
    shown = Events(user, item, t, np.full(len(user), IMPRESSION, np.int8), nan, nan)
    clicked = Events(
        user[click],
        item[click],
        t[click] + 5.0,
        np.full(click.sum(), CLICK, np.int8),
        nan[click],
        nan[click],
    )
    return Events.concat([shown, clicked])
