"""Ad lists for a batch of users at one moment: the ads in flight, their calibrated pCTR for
each user (the same features the model learned on, as of that moment), and the auction
(eCPM, reserve, budgets, frequency cap, pacing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

import numpy as np
import polars as pl

from engine.ads.auction import AuctionConfig, rank_ads
from engine.ads.log import ad_features
from engine.ads.pctr import Pctr
from engine.index.eligibility import eligible_items
from pipelines.dataset import FeatureSet


@dataclass(frozen=True)
class Inventory:
    """The ads that may be shown at `at`: item indices and ids, bids, campaigns and each
    campaign's daily budget."""

    item_idx: np.ndarray
    item_id: list[str]
    bid: np.ndarray
    campaign: np.ndarray           # (A,) campaign number
    budget: dict[int, float]       # campaign number -> daily budget (inf where none is set)

    @classmethod
    def at(cls, fs: FeatureSet, when: datetime) -> Inventory:
        ok = eligible_items(fs.items, fs.vocabs.item.size, at=when, kind="ad")
        ads = (fs.items.filter(pl.col("item_idx").is_in(np.flatnonzero(ok).tolist()))
               .filter(pl.col("bid").is_not_null() & (pl.col("bid") > 0))
               .sort("item_idx"))
        camp = ads["campaign_id"].fill_null(ads["item_id"]).cast(pl.String)
        names, number = np.unique(camp.to_numpy(), return_inverse=True)
        budgets = ads["daily_budget"].fill_null(float("inf")).to_numpy()
        budget = {c: float(budgets[number == c].max()) for c in range(len(names))}
        return cls(ads["item_idx"].to_numpy().astype(np.int64), ads["item_id"].to_list(),
                   ads["bid"].to_numpy().astype(np.float64), number.astype(np.int64), budget)


def shown_today(log: pl.DataFrame, fs: FeatureSet, when: datetime) -> dict[tuple[int, int], int]:
    """(user_idx, ad item_idx) -> impressions of the ad to the user since midnight (UTC)."""
    midnight = datetime.combine(when.date(), time())
    today = (log.filter((pl.col("ts") >= midnight) & (pl.col("ts") < when))
             .group_by("user_id", "item_id").len()
             .with_columns(fs.vocabs.user.encode(pl.col("user_id")).alias("u"),
                           fs.vocabs.item.encode(pl.col("item_id")).alias("i")))
    return {(int(u), int(i)): int(n) for u, i, n in today.select("u", "i", "len").iter_rows()}


def ad_lists(users: np.ndarray, fs: FeatureSet, model: Pctr, log: pl.DataFrame,
             cfg: AuctionConfig, *, when: datetime, inventory: Inventory | None = None
             ) -> tuple[pl.DataFrame, dict[int, float]]:
    """Each user's ads (user_idx, rank, item_idx, pctr, bid, ecpm, pace) and each campaign's
    expected spend. `log` is the labelled ad impression log before `when` (past click rates
    and today's impressions come from it); `inventory` defaults to the ads in flight then."""
    inv = inventory or Inventory.at(fs, when)
    user_ids = fs.vocabs.user.decode(pl.Series(users)).to_list()
    past = log.filter(pl.col("ts") < when)

    def pctr(rows: np.ndarray, ads: np.ndarray) -> np.ndarray:
        pos = {int(u): j for j, u in enumerate(users)}
        grid = pl.DataFrame({
            "user_id": [user_ids[pos[int(u)]] for u in rows for _ in ads],
            "item_id": [inv.item_id[j] for _ in rows for j in range(len(ads))],
        }).with_columns(pl.lit(when).alias("ts"))
        return model(ad_features(grid, past, fs)).reshape(len(rows), len(ads))

    if len(inv.item_idx) == 0:
        return pl.DataFrame(schema={"user_idx": pl.Int64, "rank": pl.Int32, "item_idx": pl.Int64,
                                    "pctr": pl.Float64, "bid": pl.Float64, "ecpm": pl.Float64,
                                    "pace": pl.Float64}), {}
    return rank_ads(np.asarray(users, np.int64), inv.item_idx, pctr, bid=inv.bid,
                    campaign=inv.campaign, budget=inv.budget,
                    shown_today=shown_today(log, fs, when), cfg=cfg)
