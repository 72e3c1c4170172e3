"""Ads, offline: how good the click model is, and what its ad choices would earn.

The pCTR model is fitted on the impressions of the validation window (features as of its
start) and scored on the test window's impressions (features as of the test start): AUC, log
loss, ECE and the reliability diagram of the calibrated probabilities.

The policy recengine would run, for each logged request, shows the ad of highest eCPM
(calibrated pCTR x bid) among the ads in flight that day. Its click rate and revenue per
impression are estimated from the log by inverse propensity scoring, plain (IPS) and
self-normalised (SNIPS), against the logging policy's observed rates. On generated data the
generator's click model gives each policy's expected revenue exactly, for the recengine policy,
the logging policy's observed figure and the oracle (highest true CTR x bid).
"""

from __future__ import annotations

from datetime import datetime, time

import numpy as np
import polars as pl
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss, roc_auc_score

from engine.ads.lists import Inventory
from engine.ads.log import ad_features, ad_windows, logged_ads
from engine.ads.pctr import Pctr, pctr_report, train_pctr
from engine.config import EngineConfig
from pipelines.dataset import FeatureSet
from pipelines.synthetic import GroundTruth
from pipelines.validate import Tables

EPS = 1e-6


def ads_evaluation(
    cfg: EngineConfig,
    tables: Tables,
    fit_fs: FeatureSet,
    test_fs: FeatureSet,
    truth: GroundTruth | None,
) -> dict[str, object] | None:
    """Every ads figure of the report, or None when the data has no ad log to learn from.
    `fit_fs` and `test_fs` are the feature sets of the train and the train + valid windows."""
    w = ad_windows(logged_ads(tables), fit_fs, test_fs)
    if w is None:
        return None
    model = train_pctr(w.fit, cfg.ads)
    out: dict[str, object] = {"click_model": click_model_figures(model, w.test)}
    if (
        "propensity" in w.test_log.columns
        and w.test_log["propensity"].null_count() < w.test_log.height
    ):
        out["policy"] = policy_figures(model, w.test_log, w.past, test_fs, truth)
    return out


def click_model_figures(model: Pctr, test: pl.DataFrame, bins: int = 10) -> dict[str, object]:
    """pctr_report's figures (AUC of the raw scores, log loss and ECE raw and calibrated),
    the AUC of the calibrated ones, the base rate's log loss and the reliability diagram."""
    base = pctr_report(model, test)
    y = test["clicked"].to_numpy().astype(float)
    cal = model(test)
    observed, predicted = calibration_curve(
        y, np.clip(cal, EPS, 1 - EPS), n_bins=bins, strategy="quantile"
    )
    return {
        "impressions": int(base["rows"]),
        "click_rate": base["click_rate"],
        "auc": float(roc_auc_score(y, cal)),
        "auc_raw": base["auc"],
        "logloss_raw": base["logloss_raw"],
        "logloss": base["logloss_calibrated"],
        "logloss_base_rate": float(log_loss(y, np.full(len(y), y.mean()))),
        "ece_raw": base["ece_raw"],
        "ece": base["ece_calibrated"],
        "reliability": {"predicted": predicted.tolist(), "observed": observed.tolist()},
    }


def off_policy_estimates(
    click: np.ndarray, logged_bid: np.ndarray, propensity: np.ndarray, match: np.ndarray
) -> dict[str, float]:
    """Click rate and revenue a deterministic policy would have had, from a log of what
    another (random) policy showed: a request counts where the policy would have shown the
    logged ad, weighted by 1 / the logging propensity. IPS divides by the requests (unbiased,
    high variance); SNIPS by the sum of the weights (slightly biased, far steadier). The
    effective sample size says how many requests the weights are worth."""
    w = np.where(match, 1.0 / np.maximum(propensity, EPS), 0.0)
    return {
        "effective_sample_size": float(w.sum() ** 2 / max((w**2).sum(), EPS)),
        "logged_click_rate": float(click.mean()),
        "logged_revenue": float((click * logged_bid).mean()),
        "ips_click_rate": float((w * click).mean()),
        "snips_click_rate": float((w * click).sum() / max(w.sum(), EPS)),
        "ips_revenue": float((w * click * logged_bid).mean()),
        "snips_revenue": float((w * click * logged_bid).sum() / max(w.sum(), EPS)),
        "max_weight": float(w.max()),
    }


def policy_figures(
    model: Pctr, test_log: pl.DataFrame, past: pl.DataFrame, fs: FeatureSet, gt: GroundTruth | None
) -> dict[str, object]:
    """IPS and SNIPS click rate and revenue of the eCPM-greedy policy on the logged
    requests, beside the logging policy's observed figures (and true values on generated
    data)."""
    rows = []
    for day, part in test_log.with_columns(pl.col("ts").dt.date().alias("_day")).group_by(
        "_day", maintain_order=True
    ):
        when = datetime.combine(day[0], time())
        inv = Inventory.at(fs, when)
        if len(inv.item_idx) == 0:
            continue
        part = part.drop("_day").with_row_index("_req")
        grid = part.select("_req", "user_id", "ts").join(
            pl.DataFrame({"item_id": inv.item_id, "bid": inv.bid}), how="cross"
        )
        p = model(ad_features(grid.drop("bid"), past, fs))
        best = (
            grid.with_columns(
                pl.Series("pctr", p), (pl.Series("pctr", p) * pl.col("bid")).alias("ecpm")
            )
            .sort("_req", "ecpm", "item_id", descending=[False, True, False])
            .group_by("_req", maintain_order=True)
            .first()
            .select("_req", pl.col("item_id").alias("chosen"), pl.col("bid").alias("chosen_bid"))
        )
        rows.append(part.join(best, on="_req", how="left").with_columns(pl.lit(when).alias("day")))
    if not rows:
        return {}
    req = pl.concat(rows)
    bids = fs.items.select("item_id", pl.col("bid").alias("logged_bid"))
    req = req.join(bids, on="item_id", how="left")
    click = req["clicked"].to_numpy().astype(float)
    logged_bid = req["logged_bid"].fill_null(0.0).to_numpy()
    prop = req["propensity"].to_numpy()
    match = (req["item_id"] == req["chosen"]).fill_null(False).to_numpy()
    out: dict[str, object] = {
        "requests": len(click),
        "matched": int(match.sum()),
        **off_policy_estimates(click, logged_bid, prop, match),
    }
    if gt is not None:
        first, last = req["ts"].min(), req["ts"].max()
        if not (isinstance(first, datetime) and isinstance(last, datetime)):
            raise ValueError("the logged requests carry no timestamps")
        mid = first + (last - first) / 2
        true_ctr = gt.click_rate(req["user_id"].cast(pl.String), req["chosen"], mid)
        out["true_click_rate"] = float(np.nanmean(true_ctr))
        out["true_revenue"] = float(np.nanmean(true_ctr * req["chosen_bid"].to_numpy()))
        out["oracle_revenue"] = _oracle_revenue(req, fs, gt, mid)
    return out


def _oracle_revenue(req: pl.DataFrame, fs: FeatureSet, gt: GroundTruth, at: datetime) -> float:
    """Expected revenue per request of showing the ad of highest true CTR x bid."""
    best = []
    for day, part in req.group_by("day", maintain_order=True):
        inv = Inventory.at(fs, day[0])
        users = part["user_id"].cast(pl.String)
        n, m = len(users), len(inv.item_id)
        ctr = gt.click_rate(
            pl.Series(np.repeat(users.to_numpy(), m)), pl.Series(inv.item_id * n), at
        ).reshape(n, m)
        best.append(np.nanmax(ctr * inv.bid[None, :], axis=1))
    return float(np.mean(np.concatenate(best)))
