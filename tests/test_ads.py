"""Ads: impressions are labelled by a click within the hour, calibration is saved as data and
lowers the ECE of miscalibrated scores, and a pCTR model trains, calibrates and round-trips on
generated data without features from its own window."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from engine.ads.calibration import Calibrator, expected_calibration_error
from engine.ads.config import AdsConfig
from engine.ads.log import FEATURES, ad_features, ad_impressions
from engine.ads.pctr import Pctr, pctr_report, train_pctr
from pipelines.config import PipelineConfig
from pipelines.dataset import FeatureSet
from pipelines.validate import validate_tables


def test_impressions_are_labelled_by_a_click_within_the_hour() -> None:
    t = datetime(2026, 3, 1, 12)
    interactions = pl.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "v", "u"],
            "item_id": ["a", "a", "b", "b", "a", "p"],
            "ts": [t, t + timedelta(minutes=5), t, t + timedelta(hours=2), t, t],
            "event": ["impression", "click", "impression", "click", "impression", "impression"],
        }
    )
    items = pl.DataFrame({"item_id": ["a", "b", "p"], "kind": ["ad", "ad", "product"]})
    log = ad_impressions(interactions, items, start=None, end=None).sort("user_id", "item_id")
    assert log.select("user_id", "item_id", "clicked").rows() == [
        ("u", "a", True),
        ("u", "b", False),
        ("v", "a", False),
    ]


def test_calibration_lowers_ece_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0.01, 0.3, 20_000)
    label = (rng.random(20_000) < true).astype(float)
    raw = np.sqrt(true)  # monotone but badly calibrated
    cal = Calibrator.fit(raw[:10_000], label[:10_000])
    before = expected_calibration_error(raw[10_000:], label[10_000:])
    after = expected_calibration_error(cal(raw[10_000:]), label[10_000:])
    assert after < before / 3, (before, after)
    assert (np.diff(cal(np.linspace(0, 1, 50))) >= 0).all()
    back = Calibrator.load(cal.save(tmp_path / "calibration.json"))
    np.testing.assert_array_equal(back(raw), cal(raw))


def test_pctr_trains_and_round_trips(
    tmp_path: Path, small_config: PipelineConfig, small_features: FeatureSet
) -> None:
    tables = validate_tables(small_config.data, small_config.columns)
    log = ad_impressions(tables.interactions, tables.items, start=None, end=None)
    assert log.height > 200 and log["clicked"].any()
    frame = ad_features(log, log.head(0), small_features)  # no past: rates fall back to priors
    assert set(FEATURES) <= set(frame.columns) and frame.height == log.height
    model = train_pctr(frame, AdsConfig(min_data_in_leaf=5))
    report = pctr_report(model, frame)
    assert report["rows"] == frame.height  # its figures: the known-probability test below
    model.save(tmp_path)
    back = Pctr.load(tmp_path)
    np.testing.assert_allclose(back(frame), model(frame))
    assert (tmp_path / "pctr.txt").read_text().startswith("tree")


def test_pctr_report_on_a_log_with_known_click_probabilities() -> None:
    """Clicks drawn from a known function of three features: on held-out users the model
    ranks clicks almost as well as the true probabilities do (AUC within 0.02 of theirs) and
    its calibrated probabilities are about as calibrated as the truth (ECE within 0.01)."""
    rng = np.random.default_rng(11)
    n = 60_000
    cols = {c: rng.random(n) for c in FEATURES}
    cols["top_category"] = rng.integers(0, 5, n).astype(float)
    true = 0.01 + 0.25 * cols["bid"] * cols["category_share"] + 0.06 * (cols["top_category"] == 2)
    users = rng.integers(0, 3_000, n)
    frame = pl.DataFrame(
        {"user_id": [f"u{u}" for u in users], **cols, "clicked": rng.random(n) < true}
    )
    fit, held = users < 2_400, users >= 2_400
    model = train_pctr(frame.filter(pl.Series(fit)), AdsConfig(min_data_in_leaf=50))
    test = frame.filter(pl.Series(held))
    y = test["clicked"].to_numpy().astype(float)
    report = pctr_report(model, test)
    truth_auc = roc_auc_score(y, true[held])
    truth_ece = expected_calibration_error(true[held], y)
    assert report["rows"] == len(y) and report["click_rate"] == pytest.approx(y.mean())
    assert truth_auc - 0.02 <= report["auc"] <= truth_auc + 0.01, (report["auc"], truth_auc)
    assert report["ece_calibrated"] <= truth_ece + 0.01, (report["ece_calibrated"], truth_ece)
    assert report["logloss_calibrated"] <= log_loss(y, true[held]) + 0.005


def test_past_rates_ignore_the_window_being_scored(
    small_config: PipelineConfig, small_features: FeatureSet
) -> None:
    """The window's own clicks must not reach its features: flipping them changes nothing."""
    tables = validate_tables(small_config.data, small_config.columns)
    cut = small_features.valid_start
    past = ad_impressions(tables.interactions, tables.items, start=None, end=cut)
    log = ad_impressions(tables.interactions, tables.items, start=cut, end=None)
    a = ad_features(log, past, small_features)
    b = ad_features(log.with_columns(~pl.col("clicked")), past, small_features)
    assert a.select(FEATURES).equals(b.select(FEATURES))
