"""Ad ranking: eCPM order, the reserve price, the frequency cap and budgets hold, and pacing
spreads a small budget over the whole batch instead of its first users."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.ads.auction import rank_ads
from engine.ads.config import AuctionConfig

ADS = np.array([101, 102, 103, 104])
BID = np.array([1.0, 0.5, 2.0, 0.01])
CAMPAIGN = np.array([1, 1, 2, 3])


def flat_pctr(users: np.ndarray, ads: np.ndarray) -> np.ndarray:
    return np.tile(np.array([0.02, 0.05, 0.015, 0.9]), (len(users), 1))


def test_ecpm_order_reserve_and_frequency_cap() -> None:
    users = np.arange(10)
    cfg = AuctionConfig(ads_per_user=3, reserve_ecpm=15.0, frequency_cap=2, pacing=False)
    frame, _ = rank_ads(
        users,
        ADS,
        flat_pctr,
        bid=BID,
        campaign=CAMPAIGN,
        budget={1: 1e9, 2: 1e9, 3: 1e9},
        shown_today={(3, 103): 2, (4, 103): 1},
        cfg=cfg,
    )
    # eCPM: 101 -> 20, 102 -> 25, 103 -> 30, 104 -> 9 (under the reserve)
    assert frame.filter(pl.col("item_idx") == 104).height == 0
    assert frame.filter(pl.col("user_idx") == 0)["item_idx"].to_list() == [103, 102, 101]
    assert 103 not in frame.filter(pl.col("user_idx") == 3)["item_idx"].to_list()
    assert 103 in frame.filter(pl.col("user_idx") == 4)["item_idx"].to_list()
    assert (frame["ecpm"] >= 15.0).all()
    np.testing.assert_allclose(frame["ecpm"], frame["pctr"] * frame["bid"] * 1000)


def test_budgets_hold_and_pacing_spreads_spend() -> None:
    users = np.arange(10_000)
    budget = {1: 5.0, 2: 1e9, 3: 1e9}
    for pacing in (False, True):
        cfg = AuctionConfig(ads_per_user=2, reserve_ecpm=0.0, pacing=pacing, chunk=100)
        frame, spent = rank_ads(
            users,
            ADS,
            flat_pctr,
            bid=BID,
            campaign=CAMPAIGN,
            budget=budget,
            shown_today={},
            cfg=cfg,
        )
        one_ad = max(p * b for p, b in zip([0.02, 0.05], [1.0, 0.5], strict=True))
        assert spent[1] <= budget[1] + one_ad  # stops within a chunk, not after it
        served = frame.join(
            pl.DataFrame({"item_idx": ADS[CAMPAIGN == 1]}), on="item_idx", how="semi"
        )["user_idx"].to_numpy()
        last_user = served.max() if len(served) else -1
        if pacing:
            assert last_user > 0.8 * len(users), "paced campaign should still serve late users"
            assert spent[1] >= 0.8 * budget[1], "pacing should not leave the budget unspent"
        else:
            assert last_user < 0.2 * len(users), "unpaced small budget is gone early"
