"""Ads: campaign settings and impressions logged by a stochastic policy with propensities.

The logging policy shows ad a to a request on day d from a user whose favourite top category
is c with probability  pi(a | d, c) ∝ bid_a * exp(GAMMA * [top(a) == c]) over ads in flight on
day d. Every logged impression records pi, so counterfactual estimators (IPS, SNIPS) can be
computed from the log. Clicks follow the true click-through rate, which rises with utility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.events import CLICK, IMPRESSION, Events, Timeline, taste, when
from pipelines.synthetic.sampling import sample_rows
from pipelines.synthetic.world import World

DAY = 86_400.0
GAMMA = 1.5
CTR_OFFSET = -4.0
CTR_PERSONAL = 0.5  # click logit = CTR_PERSONAL * personal utility + CTR_BIAS * item bias
CTR_BIAS = 0.3  #               + CTR_OFFSET


@dataclass(frozen=True)
class Campaigns:
    """Per-ad settings (indexed like the ads in `world.item_is_ad` order)."""

    ads: np.ndarray  # (A,) item index of each ad
    campaign: np.ndarray  # (A,)
    bid: np.ndarray  # (A,) cost per click
    daily_budget: np.ndarray  # (A,)
    start_day: np.ndarray  # (A,) first day in flight (may be < 0: started before the span)
    end_day: np.ndarray  # (A,) first day no longer in flight


def draw_campaigns(world: World, n_days: int, rng: np.random.Generator) -> Campaigns:
    ads = np.flatnonzero(world.item_is_ad)
    n_campaigns = max(1, len(ads) // 3)
    campaign = rng.integers(0, n_campaigns, len(ads))
    c_start = rng.integers(-14, max(1, n_days - 7), n_campaigns)
    c_len = rng.integers(7, 61, n_campaigns)
    if not (c_start + c_len >= n_days).any():
        # a shop has some campaign running when its data ends: the nightly job lists the ads
        # in flight at that moment, and the last days are the evaluation's test window
        last = int(np.argmax(c_start + c_len))
        c_len[last] = n_days + 7 - c_start[last]
    c_bid = np.exp(rng.normal(np.log(0.4), 0.6, n_campaigns))
    c_budget = np.round(np.exp(rng.normal(np.log(40.0), 0.8, n_campaigns)), 2)
    bid = np.round(c_bid[campaign] * np.exp(rng.normal(0, 0.15, len(ads))), 2) + 0.01
    return Campaigns(
        ads=ads,
        campaign=campaign,
        bid=bid,
        daily_budget=c_budget[campaign],
        start_day=c_start[campaign],
        end_day=(c_start + c_len)[campaign],
    )


def sample_ad_log(
    world: World, tl: Timeline, camp: Campaigns, n_requests: int, rng: np.random.Generator
) -> Events:
    """Logged ad impressions (with propensity) and their clicks."""
    n_days = int(np.ceil(tl.span / DAY))
    n_top = int(world.leaf_top.max()) + 1
    days = np.arange(n_days)[:, None]
    in_flight = (camp.start_day[None, :] <= days) & (days < camp.end_day[None, :])  # (D, A)
    ad_top = world.leaf_top[world.item_leaf[camp.ads]]
    match = np.exp(GAMMA * (ad_top[None, :] == np.arange(n_top)[:, None]))  # (T, A)
    w = in_flight[:, None, :] * match[None, :, :] * camp.bid[None, None, :]  # (D, T, A)
    w = w.reshape(n_days * n_top, len(camp.ads))
    total = w.sum(1)
    cdf = np.cumsum(w, 1) / np.maximum(total, 1e-300)[:, None]

    user = rng.choice(len(tl.activity), n_requests, p=tl.activity)
    t = when(user, tl, rng, margin=60.0)
    row = np.minimum((t // DAY).astype(np.int64), n_days - 1) * n_top + world.user_top[user]
    ok = total[row] > 0
    user, t, row = user[ok], t[ok], row[ok]
    a = sample_rows(cdf, row, rng)
    prop = w[row, a] / total[row]
    item = camp.ads[a]
    personal = (
        np.einsum("nd,nd->n", taste(world, user, t, tl.span), world.item_vecs[item]) / world.tau
    )
    ctr = 1.0 / (
        1.0 + np.exp(-(CTR_PERSONAL * personal + CTR_BIAS * world.item_bias[item] + CTR_OFFSET))
    )
    click = rng.random(len(user)) < ctr
    nan = np.full(len(user), np.nan)
    shown = Events(user, item, t, np.full(len(user), IMPRESSION, np.int8), nan, prop)
    clicked = Events(
        user[click],
        item[click],
        t[click] + 3.0,
        np.full(click.sum(), CLICK, np.int8),
        camp.bid[a][click],
        nan[click],
    )
    return Events.concat([shown, clicked])
