"""Ad lists at a moment: only ads in flight with a bid, ranked by calibrated pCTR x bid, no ad
past its frequency cap for a user, no campaign past its daily budget by more than one ad."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from engine.ads.config import AdsConfig, AuctionConfig
from engine.ads.lists import Inventory, Shortlist, ad_lists
from engine.ads.log import ad_features, ad_impressions
from engine.ads.pctr import Pctr, train_pctr
from pipelines.config import PipelineConfig
from pipelines.dataset import FeatureSet
from pipelines.validate import validate_tables


@pytest.fixture(scope="module")
def log(small_config: PipelineConfig) -> pl.DataFrame:
    tables = validate_tables(small_config.data, small_config.columns)
    return ad_impressions(tables.interactions, tables.items, start=None, end=None)


@pytest.fixture(scope="module")
def model(log: pl.DataFrame, small_features: FeatureSet) -> Pctr:
    return train_pctr(ad_features(log, log.head(0), small_features), AdsConfig(min_data_in_leaf=5))


def when(fs: FeatureSet) -> datetime:
    """A moment when some of the small set's ads are in flight and some have ended."""
    return fs.valid_start - timedelta(days=10, hours=12)


def test_inventory_is_ads_in_flight_with_a_bid(small_features: FeatureSet) -> None:
    at = when(small_features)
    inv = Inventory.at(small_features, at)
    assert len(inv.item_idx) > 0
    rows = small_features.items.filter(pl.col("item_idx").is_in(inv.item_idx.tolist()))
    assert (rows["kind"] == "ad").all() and rows["available"].all() and (rows["bid"] > 0).all()
    assert (
        (rows["start_ts"].is_null() | (rows["start_ts"] <= at))
        & (rows["end_ts"].is_null() | (rows["end_ts"] > at))
    ).all()
    out_of_flight = small_features.items.filter(
        (pl.col("kind") == "ad") & (pl.col("end_ts") <= at)
    )["item_idx"].to_list()
    assert out_of_flight and not set(out_of_flight) & set(inv.item_idx.tolist())


def test_lists_follow_ecpm_and_the_frequency_cap(
    small_features: FeatureSet, model: Pctr, log: pl.DataFrame
) -> None:
    at = when(small_features)
    users = np.arange(1, 60, dtype=np.int64)
    cfg = AuctionConfig(ads_per_user=3, reserve_ecpm=0.0, frequency_cap=2, pacing=False)
    past = log.filter(pl.col("ts") < at)
    lists, _ = ad_lists(users, small_features, model, past, cfg, when=at)
    assert lists.height > 0
    for (_,), got in lists.group_by("user_idx"):
        ecpm = got.sort("rank")["ecpm"].to_numpy()
        assert (np.diff(ecpm) <= 1e-12).all()
    np.testing.assert_allclose(lists["ecpm"], lists["pctr"] * lists["bid"] * 1000)
    # the user's best ad, shown twice today already, is capped
    top = lists.filter(pl.col("rank") == 1).row(0, named=True)
    uid = small_features.vocabs.user.decode(pl.Series([top["user_idx"]]))[0]
    iid = small_features.vocabs.item.decode(pl.Series([top["item_idx"]]))[0]
    shown = pl.DataFrame(
        {
            "user_id": [uid] * 2,
            "item_id": [iid] * 2,
            "ts": [at - timedelta(hours=2), at - timedelta(hours=1)],
            "clicked": [False, False],
        }
    )
    again, _ = ad_lists(
        users, small_features, model, pl.concat([past, shown], how="diagonal_relaxed"), cfg, when=at
    )
    mine = again.filter(pl.col("user_idx") == top["user_idx"])["item_idx"].to_list()
    assert top["item_idx"] not in mine
    assert len(mine) > 0  # the other ads still come


def test_no_campaign_outspends_its_budget(
    small_features: FeatureSet, model: Pctr, log: pl.DataFrame
) -> None:
    at = when(small_features)
    users = small_features.users["user_idx"].to_numpy().astype(np.int64)
    users = users[users > 0]
    inv = Inventory.at(small_features, at)
    tight = dict.fromkeys(inv.budget, 0.05)
    cfg = AuctionConfig(ads_per_user=2, reserve_ecpm=0.0, chunk=50)
    budgets = Inventory(inv.item_idx, inv.item_id, inv.bid, inv.campaign, dict(tight))
    lists, spent = ad_lists(
        users, small_features, model, log.filter(pl.col("ts") < at), cfg, when=at, inventory=budgets
    )
    camp = dict(zip(inv.item_idx.tolist(), inv.campaign.tolist(), strict=True))
    cost = (
        lists.select(
            pl.col("item_idx").replace_strict(camp).alias("campaign"),
            (pl.col("pctr") * pl.col("bid")).alias("cost"),
        )
        .group_by("campaign")
        .agg(pl.col("cost").sum().alias("listed"), pl.col("cost").max().alias("one_ad"))
    )
    assert cost.height > 0
    for c, listed, one_ad in cost.iter_rows():
        # the spend is the listed ads' expected cost, and it passes the budget by less than
        # the last ad's: a campaign stops as soon as it has spent its budget
        assert spent[c] == pytest.approx(listed, rel=1e-9)
        assert spent[c] < tight[c] + one_ad, (c, spent[c], tight[c], one_ad)
    assert all(spent[c] == 0.0 for c in set(spent) - set(cost["campaign"].to_list()))
    assert any(spent[c] >= tight[c] for c in spent)  # some budgets were reached...
    assert lists["user_idx"].n_unique() < len(users)  # ...and stopped some users' ads


def test_auction_scores_only_each_users_shortlist(
    small_features: FeatureSet, model: Pctr, log: pl.DataFrame
) -> None:
    """With a shortlist smaller than the inventory, every listed ad is on that user's
    shortlist: the best prior eCPM overall, or among the best in one of the user's top
    categories; and the same auction over the whole inventory (0) is what a shortlist
    covering every ad gives."""
    at = when(small_features)
    past = log.filter(pl.col("ts") < at)
    inv = Inventory.at(small_features, at)
    assert len(inv.item_idx) > 6
    short = Shortlist.build(inv, small_features, past, at, 6)
    users = np.arange(1, 80, dtype=np.int64)
    mask = short.mask(users)
    assert (mask.sum(axis=1) <= 3 + 3 * 1).all() and (mask.sum(axis=1) >= 3).all()
    assert mask[:, short.overall].all() and not mask.all()
    cfg = AuctionConfig(ads_per_user=3, reserve_ecpm=0.0, pacing=False, candidates=6)
    lists, _ = ad_lists(users, small_features, model, past, cfg, when=at)
    column = {int(a): j for j, a in enumerate(inv.item_idx)}
    row = {int(u): i for i, u in enumerate(users)}
    assert lists.height > 0
    assert all(mask[row[u], column[a]] for u, a in lists.select("user_idx", "item_idx").iter_rows())
    whole, _ = ad_lists(
        users, small_features, model, past, cfg.model_copy(update={"candidates": 0}), when=at
    )
    covering, _ = ad_lists(
        users,
        small_features,
        model,
        past,
        cfg.model_copy(update={"candidates": len(inv.item_idx)}),
        when=at,
    )
    assert whole.equals(covering) and not whole.equals(lists)
