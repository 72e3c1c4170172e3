"""The logged ad impressions of a time window, labelled with whether they were clicked, with
the features a pCTR model sees: the ad's bid, category and past click rate, the user's past ad
click rate, activity and affinity to the ad's category, and the hour and weekday.

Past rates come only from log rows before the feature set's `as_of`, so a window after it can be
learned and scored without its own clicks leaking into the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from pipelines.dataset import FeatureSet
from pipelines.encode import INDEX_DTYPE
from pipelines.scalars import float_or
from pipelines.validate import Tables

CLICK_WITHIN = timedelta(hours=1)
FEATURES = [
    "bid",
    "ad_ctr",
    "ad_impressions",
    "user_ad_ctr",
    "user_ad_impressions",
    "category_share",
    "user_events",
    "hour",
    "weekday",
    "top_category",
]
PRIOR_IMPRESSIONS = 20.0  # smoothing of past click rates towards the overall rate


def ad_impressions(
    interactions: pl.DataFrame, items: pl.DataFrame, *, start: datetime | None, end: datetime | None
) -> pl.DataFrame:
    """user_id, item_id, ts, propensity, clicked for ad impressions with start <= ts < end."""
    ads = items.filter(pl.col("kind") == "ad").select("item_id")
    rows = interactions.join(ads, on="item_id", how="semi")
    if start is not None:
        rows = rows.filter(pl.col("ts") >= start)
    if end is not None:
        rows = rows.filter(pl.col("ts") < end)
    shown = rows.filter(pl.col("event") == "impression").with_row_index("_row")
    clicks = rows.filter(pl.col("event") == "click").select(
        "user_id", "item_id", pl.col("ts").alias("click_ts")
    )
    clicked = (
        shown.join(clicks, on=["user_id", "item_id"])
        .filter(
            (pl.col("click_ts") >= pl.col("ts"))
            & (pl.col("click_ts") <= pl.col("ts") + CLICK_WITHIN)
        )
        .select("_row")
        .unique()
    )
    keep = ["user_id", "item_id", "ts"] + (["propensity"] if "propensity" in shown.columns else [])
    return shown.with_columns(
        pl.col("_row").is_in(clicked["_row"].implode()).alias("clicked")
    ).select(*keep, "clicked")


@dataclass(frozen=True)
class AdStats:
    """What `ad_features` joins onto impressions, computed once from the past log and the
    feature set: the ad lists feature a chunk of users at a time against the same past, and
    these group-bys (over every past impression and every interaction) would otherwise run
    again for each chunk."""

    rate: float  # the overall past click rate (the prior)
    ad: pl.DataFrame  # item_id, ad_ctr, ad_impressions
    user_ad: pl.DataFrame  # user_id, user_ad_ctr, user_ad_impressions
    users: pl.DataFrame  # user_idx, user_events
    affinity: pl.DataFrame  # user_idx, top_category, category_share
    items: pl.DataFrame  # item_id, bid, top_category

    @classmethod
    def of(cls, past: pl.DataFrame, fs: FeatureSet) -> AdStats:
        rate = float_or(past["clicked"].mean(), 0.0) if past.height else 0.0
        prior = PRIOR_IMPRESSIONS

        def smoothed(by: str, name: str) -> pl.DataFrame:
            clicks = pl.col("clicked").sum() + prior * rate
            return past.group_by(by).agg(
                (clicks / (pl.len() + prior)).alias(f"{name}_ctr"),
                pl.len().alias(f"{name}_impressions"),
            )

        return cls(
            rate=rate,
            ad=smoothed("item_id", "ad"),
            user_ad=smoothed("user_id", "user_ad"),
            users=fs.window_interactions().group_by("user_idx").agg(pl.len().alias("user_events")),
            affinity=fs.affinity.select(
                "user_idx", "top_category", pl.col("share").alias("category_share")
            ),
            items=fs.items.select("item_id", "bid", "top_category"),
        )


def ad_features(
    log: pl.DataFrame, past: pl.DataFrame, fs: FeatureSet, stats: AdStats | None = None
) -> pl.DataFrame:
    """`log` with the pCTR features; `past` is the labelled log before `fs.as_of` (`stats`:
    its `AdStats`, when the caller holds them already)."""
    st = stats or AdStats.of(past, fs)
    item_idx = fs.vocabs.item.encode(pl.col("item_id")).cast(INDEX_DTYPE)
    user_idx = fs.vocabs.user.encode(pl.col("user_id")).cast(INDEX_DTYPE)
    return (
        log.with_columns(item_idx.alias("item_idx"), user_idx.alias("user_idx"))
        .join(st.items, on="item_id", how="left")
        .join(st.ad, on="item_id", how="left")
        .join(st.user_ad, on="user_id", how="left")
        .join(st.users, on="user_idx", how="left")
        .join(st.affinity, on=["user_idx", "top_category"], how="left")
        .with_columns(
            pl.col("ad_ctr").fill_null(st.rate),
            pl.col("user_ad_ctr").fill_null(st.rate),
            pl.col(
                "ad_impressions", "user_ad_impressions", "user_events", "category_share"
            ).fill_null(0),
            pl.col("ts").dt.hour().alias("hour"),
            pl.col("ts").dt.weekday().alias("weekday"),
        )
    )


@dataclass(frozen=True)
class AdWindows:
    """The two windows a pCTR model is fitted and scored on: the validation window's
    impressions with features as of its start, and the test window's with features as of the
    test start (`test_log` and `past`: those impressions unfeatured, and the log before)."""

    fit: pl.DataFrame
    test: pl.DataFrame
    test_log: pl.DataFrame
    past: pl.DataFrame


def ad_windows(log: pl.DataFrame, fit_fs: FeatureSet, test_fs: FeatureSet) -> AdWindows | None:
    """The fit and test windows of `log` (the labelled impressions) for feature sets built on
    the train and the train + valid windows; None where there is nothing to learn or score: a
    split without time windows (leave-last-out), or no click to fit on, or a test window
    with a single class."""
    a, b = fit_fs.valid_start, fit_fs.test_start
    if a is None or b is None:
        return None
    fit = ad_features(
        log.filter((pl.col("ts") >= a) & (pl.col("ts") < b)), log.filter(pl.col("ts") < a), fit_fs
    )
    test_log, past = log.filter(pl.col("ts") >= b), log.filter(pl.col("ts") < b)
    test = ad_features(test_log, past, test_fs)
    if (
        fit.height == 0
        or test.height == 0
        or not fit["clicked"].any()
        or test["clicked"].n_unique() < 2
    ):
        return None
    return AdWindows(fit, test, test_log, past)


def logged_ads(tables: Tables) -> pl.DataFrame:
    """Every labelled ad impression of the interactions table."""
    return ad_impressions(tables.interactions, tables.items, start=None, end=None)
