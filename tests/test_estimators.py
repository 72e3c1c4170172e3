"""The numbers the reports and the quality gate rest on, against answers worked out by hand or
by another library: off-policy estimates (IPS, SNIPS) of an ad policy, the paired bootstrap
interval and t-test of two methods' per-user figures, NDCG@k as LightGBM defines it, and the
expected calibration error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from engine.ads.calibration import expected_calibration_error
from engine.evaluation.ads import off_policy_estimates
from engine.evaluation.evaluate import paired
from engine.rerank.ndcg import mean_ndcg, ndcg_per_query, paired_bootstrap


def test_ips_and_snips_on_a_log_worked_by_hand() -> None:
    # four logged requests; the policy would have shown the logged ad in three of them
    click = np.array([1.0, 0.0, 1.0, 1.0])
    bid = np.array([2.0, 3.0, 5.0, 1.0])
    propensity = np.array([0.5, 0.25, 0.5, 1.0])
    match = np.array([True, True, False, True])
    got = off_policy_estimates(click, bid, propensity, match)
    # weights 2, 4, 0, 1 (sum 7, sum of squares 21)
    assert got["ips_click_rate"] == pytest.approx((2 * 1 + 4 * 0 + 1 * 1) / 4)
    assert got["snips_click_rate"] == pytest.approx(3 / 7)
    assert got["ips_revenue"] == pytest.approx((2 * 1 * 2 + 1 * 1 * 1) / 4)
    assert got["snips_revenue"] == pytest.approx(5 / 7)
    assert got["effective_sample_size"] == pytest.approx(49 / 21)
    assert got["logged_click_rate"] == pytest.approx(3 / 4)
    assert got["logged_revenue"] == pytest.approx((2 + 5 + 1) / 4)
    assert got["max_weight"] == 4.0


def test_ips_recovers_a_policys_true_click_rate_from_a_random_log() -> None:
    """A logging policy shows one of three ads at random with known, unequal propensities;
    the estimates of a policy that always shows ad 0 land on ad 0's click rate."""
    rng = np.random.default_rng(7)
    n = 200_000
    shown_p = np.array([0.2, 0.5, 0.3])
    ctr = np.array([0.08, 0.02, 0.05])
    bid = np.array([1.5, 1.0, 2.0])
    shown = rng.choice(3, n, p=shown_p)
    click = (rng.random(n) < ctr[shown]).astype(float)
    got = off_policy_estimates(click, bid[shown], shown_p[shown], shown == 0)
    se = math.sqrt(ctr[0] * (1 - ctr[0]) / (n * shown_p[0]))  # of the SNIPS click rate
    assert got["snips_click_rate"] == pytest.approx(ctr[0], abs=4 * se)
    assert got["ips_click_rate"] == pytest.approx(ctr[0], abs=4 * se * 1.2)
    assert got["ips_revenue"] == pytest.approx(ctr[0] * bid[0], abs=4 * se * bid[0] * 1.2)
    # the log's own click rate is the mix's, far from the policy's
    assert got["logged_click_rate"] == pytest.approx(float(shown_p @ ctr), abs=0.002)


def test_paired_bootstrap_interval_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.beta(2, 5, 800)
    b = a - 0.03 + rng.normal(0, 0.05, 800)  # paired: shares each user's luck
    mean, lo, hi = paired_bootstrap(a, b, draws=4000, level=0.95, seed=1)
    ref = stats.bootstrap(
        (a - b,), np.mean, n_resamples=4000, confidence_level=0.95, method="percentile", rng=2
    ).confidence_interval
    width = ref.high - ref.low
    assert mean == pytest.approx(float(np.mean(a - b)))
    assert lo == pytest.approx(ref.low, abs=0.04 * width)
    assert hi == pytest.approx(ref.high, abs=0.04 * width)
    assert lo < 0.03 < hi  # the planted difference lies inside


def test_paired_t_test_matches_scipy_and_a_direct_formula() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0.30, 0.1, 300)
    b = a - 0.01 + rng.normal(0, 0.08, 300)
    got = paired(a, b, draws=500, seed=0)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert got["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), rel=1e-9)
    assert got["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert got["diff"] == pytest.approx(d.mean())
    assert got["ci_low"] < got["diff"] < got["ci_high"]
    same = paired(a, a.copy(), draws=500, seed=0)
    assert same["p_value"] == 1.0 and same["diff"] == 0.0


def test_ndcg_on_lists_worked_by_hand() -> None:
    y = np.array([1, 0, 2, 0, 0, 1, 0], float)
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.4, 0.2, 0.2])
    group = np.array([3, 2, 2])
    # query 1 at k=2: shown gains (2^1-1, 2^0-1) = (1, 0) -> DCG 1; ideal (3, 1) -> 3 + 1/log2(3)
    q1 = 1.0 / (3.0 + 1.0 / math.log2(3))
    # query 2 has nothing relevant: counts as 1 (LightGBM's convention)
    # query 3 ties: row order decides, the relevant row is first -> 1
    np.testing.assert_allclose(ndcg_per_query(y, scores, group, 2), [q1, 1.0, 1.0])
    assert mean_ndcg(y, scores, group, 2) == pytest.approx((q1 + 2.0) / 3)
    # the tie broken the other way round halves query 3 (gain 1 at rank 2: 1/log2(3))
    flipped = y.copy()
    flipped[5:] = [0, 1]
    assert ndcg_per_query(flipped, scores, group, 2)[2] == pytest.approx(1 / math.log2(3))
    # at k=3 query 1 also shows the gain-3 row at rank 3
    assert ndcg_per_query(y, scores, group, 3)[0] == pytest.approx(
        (1.0 + 3.0 / 2.0) / (3.0 + 1.0 / math.log2(3))
    )
    assert math.isnan(mean_ndcg(y[:0], scores[:0], group[:0], 2))


def test_expected_calibration_error_worked_by_hand() -> None:
    prob = np.array([0.9, 0.1, 0.9, 0.1])
    label = np.array([1.0, 0.0, 1.0, 1.0])
    # two equal-count bins: {0.1, 0.1} with rate 1/2 and {0.9, 0.9} with rate 1
    assert expected_calibration_error(prob, label, bins=2) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error(np.full(4, 0.75), label, bins=1) == pytest.approx(0.0)
