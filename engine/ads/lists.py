"""Ad lists for a batch of users at one moment: the ads in flight, a shortlist of them for
each user, their calibrated pCTR for the user (the same features the model learned on, as of
that moment), and the auction (eCPM, reserve, budgets, frequency cap, pacing).

The shortlist keeps the pCTR model's work linear in users: scoring every ad in flight for
every user is users x ads rows (250k users x 1,547 ads in flight: 387 million), so each user's
auction sees the `[auction] candidates` ads with the best prior eCPM (bid x the ad's past
click rate) overall and within the user's top categories, the two things the model's
ad-side features say most about (BENCHMARKS.md measures what the shortlist changes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

import numpy as np
import polars as pl

from engine.ads.auction import rank_ads
from engine.ads.config import AuctionConfig
from engine.ads.log import AdStats, ad_features
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
    campaign: np.ndarray  # (A,) campaign number
    budget: dict[int, float]  # campaign number -> daily budget (inf where none is set)

    @classmethod
    def at(cls, fs: FeatureSet, when: datetime) -> Inventory:
        ok = eligible_items(fs.items, fs.vocabs.item.size, at=when, kind="ad")
        ads = (
            fs.items.filter(pl.col("item_idx").is_in(np.flatnonzero(ok).tolist()))
            .filter(pl.col("bid").is_not_null() & (pl.col("bid") > 0))
            .sort("item_idx")
        )
        camp = ads["campaign_id"].fill_null(ads["item_id"]).cast(pl.String)
        names, number = np.unique(camp.to_numpy(), return_inverse=True)
        budgets = ads["daily_budget"].fill_null(float("inf")).to_numpy()
        budget = {c: float(budgets[number == c].max()) for c in range(len(names))}
        return cls(
            ads["item_idx"].to_numpy().astype(np.int64),
            ads["item_id"].to_list(),
            ads["bid"].to_numpy().astype(np.float64),
            number.astype(np.int64),
            budget,
        )


@dataclass(frozen=True)
class Shortlist:
    """Which ads each user's auction scores: the `n // 2` ads with the best prior eCPM (bid x
    smoothed past click rate) overall, and in each of the user's top 3 categories (by
    affinity) the best `n // 6`. All ads when `n` is 0 or covers the inventory."""

    user_categories: dict[int, np.ndarray]  # user_idx -> the user's top category codes
    by_category: dict[int, np.ndarray]  # category code -> shortlisted ad columns
    overall: np.ndarray  # ad columns every user gets
    n_ads: int
    everything: bool

    @classmethod
    def build(
        cls,
        inv: Inventory,
        fs: FeatureSet,
        past: pl.DataFrame,
        when: datetime,
        n: int,
        stats: AdStats | None = None,
    ) -> Shortlist:
        a = len(inv.item_idx)
        if n == 0 or n >= a:
            return cls({}, {}, np.arange(a), a, True)
        probe = pl.DataFrame(
            {"user_id": pl.Series([None] * a, dtype=past["user_id"].dtype), "item_id": inv.item_id}
        ).with_columns(pl.lit(when).alias("ts"))
        feats = ad_features(probe, past, fs, stats)
        prior = feats["ad_ctr"].to_numpy() * inv.bid
        order = np.argsort(-prior, kind="stable")
        category = feats["top_category"].fill_null(-1).to_numpy()
        per = max(1, n // 6)
        by_category = {int(c): order[category[order] == c][:per] for c in np.unique(category)}
        top = (
            fs.affinity.sort(["user_idx", "affinity"], descending=[False, True])
            .group_by("user_idx", maintain_order=True)
            .head(3)
            .group_by("user_idx")
            .agg("top_category")
        )
        user_categories = dict(
            zip(
                top["user_idx"].to_list(),
                (np.asarray(v) for v in top["top_category"].to_list()),
                strict=True,
            )
        )
        return cls(user_categories, by_category, order[: n // 2], a, False)

    def mask(self, users: np.ndarray) -> np.ndarray:
        """(users, ads) bool: True where the user's auction scores the ad."""
        out = np.zeros((len(users), self.n_ads), bool)
        out[:, self.overall] = True
        if self.everything:
            return out
        empty = np.empty(0, np.int64)
        for i, u in enumerate(users):
            for c in self.user_categories.get(int(u), ()):
                out[i, self.by_category.get(int(c), empty)] = True
        return out


def shown_today(log: pl.DataFrame, fs: FeatureSet, when: datetime) -> dict[tuple[int, int], int]:
    """(user_idx, ad item_idx) -> impressions of the ad to the user since midnight (UTC)."""
    midnight = datetime.combine(when.date(), time())
    today = (
        log.filter((pl.col("ts") >= midnight) & (pl.col("ts") < when))
        .group_by("user_id", "item_id")
        .len()
        .with_columns(
            fs.vocabs.user.encode(pl.col("user_id")).alias("u"),
            fs.vocabs.item.encode(pl.col("item_id")).alias("i"),
        )
    )
    return {(int(u), int(i)): int(n) for u, i, n in today.select("u", "i", "len").iter_rows()}


PCTR_SCHEMA = {"user_idx": pl.Int64, "ad": pl.Int32, "pctr": pl.Float64}


def ad_pctr(
    users: np.ndarray,
    fs: FeatureSet,
    model: Pctr,
    log: pl.DataFrame,
    cfg: AuctionConfig,
    *,
    when: datetime,
    inventory: Inventory | None = None,
) -> pl.DataFrame:
    """user_idx, ad (the column in the inventory), pctr: the calibrated pCTR of every ad on
    each user's shortlist. A row's value depends on its user and ad alone, so users may be
    scored in any split (the ranks of a nightly each score theirs) and the auction reads the
    same values."""
    inv = inventory or Inventory.at(fs, when)
    users = np.asarray(users, np.int64)
    if len(inv.item_idx) == 0 or len(users) == 0:
        return pl.DataFrame(schema=PCTR_SCHEMA)
    past = log.filter(pl.col("ts") < when)
    stats = AdStats.of(past, fs)  # once: the shortlist and every chunk of users read it
    short = Shortlist.build(inv, fs, past, when, cfg.candidates, stats)
    item_ids = pl.Series(inv.item_id)
    parts = []
    for a in range(0, len(users), cfg.chunk):
        rows = users[a : a + cfg.chunk]
        r, c = np.nonzero(short.mask(rows))
        ids = fs.vocabs.user.decode(pl.Series(rows[r])).cast(log["user_id"].dtype)
        grid = pl.DataFrame({"user_id": ids, "item_id": item_ids.gather(c)}).with_columns(
            pl.lit(when).alias("ts")
        )
        parts.append(
            pl.DataFrame(
                {
                    "user_idx": rows[r],
                    "ad": c.astype(np.int32),
                    "pctr": np.asarray(model(ad_features(grid, past, fs, stats)), np.float64),
                },
                schema=PCTR_SCHEMA,
            )
        )
    return pl.concat(parts)


def ad_lists(
    users: np.ndarray,
    fs: FeatureSet,
    model: Pctr,
    log: pl.DataFrame,
    cfg: AuctionConfig,
    *,
    when: datetime,
    inventory: Inventory | None = None,
    pctr: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, dict[int, float]]:
    """Each user's ads (user_idx, rank, item_idx, pctr, bid, ecpm, pace) and each campaign's
    expected spend. `log` is the labelled ad impression log before `when` (past click rates
    and today's impressions come from it); `inventory` defaults to the ads in flight then;
    `pctr` (from `ad_pctr`, scored elsewhere) saves scoring the shortlists here. The auction
    runs over every user in `users`' order: budgets and pacing follow the whole batch."""
    inv = inventory or Inventory.at(fs, when)
    if len(inv.item_idx) == 0:
        return pl.DataFrame(
            schema={
                "user_idx": pl.Int64,
                "rank": pl.Int32,
                "item_idx": pl.Int64,
                "pctr": pl.Float64,
                "bid": pl.Float64,
                "ecpm": pl.Float64,
                "pace": pl.Float64,
            }
        ), {}
    users = np.asarray(users, np.int64)
    if pctr is None:
        pctr = ad_pctr(users, fs, model, log, cfg, when=when, inventory=inv)
    scored = pctr.sort("user_idx", "ad")
    by_user = scored["user_idx"].to_numpy()
    ad_col = scored["ad"].to_numpy().astype(np.int64)
    value = scored["pctr"].to_numpy()

    def chunk_pctr(rows: np.ndarray, ads: np.ndarray) -> np.ndarray:
        """(rows, ads) calibrated pCTR on each row's shortlist, 0 elsewhere (below any
        reserve, so never shown)."""
        start = np.searchsorted(by_user, rows, side="left")
        count = np.searchsorted(by_user, rows, side="right") - start
        at = np.repeat(start - np.cumsum(count) + count, count) + np.arange(count.sum())
        out = np.zeros((len(rows), len(ads)))
        out[np.repeat(np.arange(len(rows)), count), ad_col[at]] = value[at]
        return out

    return rank_ads(
        users,
        inv.item_idx,
        chunk_pctr,
        bid=inv.bid,
        campaign=inv.campaign,
        budget=inv.budget,
        shown_today=shown_today(log, fs, when),
        cfg=cfg,
    )
