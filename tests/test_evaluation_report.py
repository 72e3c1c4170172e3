"""`recengine evaluate` end to end on the small generated set: the report page has every
section with every plot embedded, metrics.json holds the page's numbers, and `--compare`
prints the deltas of two reports."""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.evaluation.report import SECTIONS, render

runner = CliRunner()


@pytest.fixture
def report(evaluation_report: Path) -> Path:
    """The session's report on the small set (conftest.py): read only."""
    return evaluation_report


def test_page_has_every_section_and_only_embedded_images(report: Path) -> None:
    page = (report / "index.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    doc = json.loads((report / "metrics.json").read_text())
    assert doc["ads"] is not None  # the small set logs ad impressions and clicks
    assert len(images) == 6  # curves, stages, segments, beyond, timings, reliability
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "No offline evaluation" not in page
    # what the fit tried on held-out users is shown: every leaf count and signal order
    chosen = page.split('<section id="choices">')[1].split("</section>")[0]
    assert "num_leaves=63:" in chosen and "num_leaves=15:" in chosen
    assert "two_tower:" in chosen and "re-ranker:" in chosen


def test_metrics_json_holds_every_method_and_the_verdict(report: Path) -> None:
    doc = json.loads((report / "metrics.json").read_text())
    assert {
        "final",
        "reranked",
        "two_tower",
        "popularity",
        "item_knn",
        "ease",
        "als",
        "oracle",
    } <= set(doc["methods"])
    for name, m in doc["methods"].items():
        for metric in ("recall", "precision", "ndcg", "map", "mrr", "hit_rate"):
            for k in doc["protocol"]["ks"]:
                assert 0.0 <= m["metrics"][f"{metric}@{k}"] <= 1.0, (name, metric, k)
        assert set(m["beyond"]) == {"coverage", "novelty", "diversity", "popularity_percentile"}
        assert "new users" in m["segments"] and "returning users" in m["segments"]
        assert m["oracle_share"][f"ndcg@{doc['protocol']['ks'][0]}"] is not None
    # the page shows the numbers of the document: re-rendering it gives the same page
    assert render(doc) == (report / "index.html").read_text()
    v = doc["verdict"]
    assert v["best_baseline"] in doc["methods"] and 0.0 <= v["p_value"] <= 1.0
    assert v["beats_best_baseline"] == (v["final"] >= v["best_baseline_value"])
    # a longer list never finds fewer items, and the candidate set bounds the final list
    final = doc["methods"]["final"]["metrics"]
    ks = doc["protocol"]["ks"]
    assert all(final[f"recall@{a}"] <= final[f"recall@{b}"] for a, b in itertools.pairwise(ks))
    assert final[f"recall@{ks[-1]}"] <= doc["candidates"]["recall"] + 1e-12
    clicks, policy = doc["ads"]["click_model"], doc["ads"]["policy"]
    assert clicks["impressions"] == policy["requests"] > 0  # the test window's impressions
    assert clicks["click_rate"] == pytest.approx(policy["logged_click_rate"])
    assert 0.0 <= clicks["auc"] <= 1.0 and clicks["ece"] <= clicks["ece_raw"]
    # importance weights: only matched requests count, and they are worth at most their number
    assert 0 < policy["matched"] <= policy["requests"]
    assert 0 < policy["effective_sample_size"] <= policy["matched"] + 1e-9
    assert policy["true_revenue"] <= policy["oracle_revenue"] + 1e-12  # the oracle's is best


def test_compare_prints_the_deltas(report: Path, tmp_path: Path) -> None:
    doc = json.loads((report / "metrics.json").read_text())
    before = doc["methods"]["final"]["metrics"]["ndcg@10"]
    doc["methods"]["final"]["metrics"]["ndcg@10"] = before + 0.25
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps(doc))
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--compare",
            str(report),
            str(other),
            "--match",
            r"methods\.final\.metrics\.ndcg@10$",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "+0.2500" in result.output and "methods.final.metrics.ndcg@10" in result.output


def test_compare_names_a_missing_report(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 5 and "no evaluation metrics.json" in result.output


def test_ads_section_shows_calibration_and_the_policy_estimates(report: Path) -> None:
    doc = json.loads((report / "metrics.json").read_text())
    doc["ads"] = {
        "click_model": {
            "impressions": 900,
            "click_rate": 0.07,
            "auc": 0.7,
            "auc_raw": 0.71,
            "logloss": 0.24,
            "logloss_raw": 0.25,
            "logloss_base_rate": 0.26,
            "ece": 0.012,
            "ece_raw": 0.02,
            "reliability": {"predicted": [0.02, 0.07, 0.2], "observed": [0.03, 0.06, 0.21]},
        },
        "policy": {
            "requests": 900,
            "effective_sample_size": 80.5,
            "logged_click_rate": 0.07,
            "logged_revenue": 0.05,
            "ips_click_rate": 0.15,
            "ips_revenue": 0.17,
            "snips_click_rate": 0.14,
            "snips_revenue": 0.16,
            "true_click_rate": 0.12,
            "true_revenue": 0.138,
            "oracle_revenue": 0.186,
        },
    }
    section = render(doc).split('<section id="ads">')[1].split("</section>")[0]
    assert section.count("data:image/png;base64,") == 1
    for text in ("0.0120", "SNIPS", "0.1380", "0.1860", "80.5"):
        assert text in section, text


def test_too_few_users_give_no_verdict(report: Path) -> None:
    """The small set's test window holds fewer users than [evaluation] min_users (500): the
    page says the figures cannot decide instead of naming a winner."""
    doc = json.loads((report / "metrics.json").read_text())
    v = doc["verdict"]
    assert doc["protocol"]["users"] < 500
    assert v["decided"] is False and "cannot decide" in v["reason"]
    page = (report / "index.html").read_text()
    assert "No verdict" in page and "BELOW" not in page and "at or above" not in page
    from engine.evaluation.evaluate import verdict_of

    methods = {n: {"metrics": {"ndcg@10": x}} for n, x in (("final", 0.2), ("ease", 0.1))}
    sig = {"ease": {"p_value": 0.01}}
    decided = verdict_of(methods, sig, "ndcg@10", users=600, min_users=500)
    assert "decided" not in decided and decided["best_baseline"] == "ease"
