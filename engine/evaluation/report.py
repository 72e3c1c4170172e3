"""The evaluation report: one self-contained HTML page (plots embedded as PNG, no scripts, no
network) and `metrics.json` beside it, which holds every number the page shows."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipelines.io import atomic_path

SECTIONS = {
    "summary": "Summary",
    "metrics": "Metrics beside the baselines",
    "significance": "Paired tests against recengine's final list",
    "curves": "Metric@K curves",
    "stages": "Where relevant items are lost, stage by stage",
    "segments": "User segments and cold-start items",
    "beyond": "Coverage, novelty, diversity and popularity",
    "ads": "Ads: click model, calibration and the ad policy",
    "choices": "Settings chosen on validation",
    "timings": "Stage timings",
    "config": "Config",
}
"""id -> heading of every section, in page order (a test checks each is rendered)."""

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
caption{text-align:left;font-weight:600;padding:.25em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;overflow-wrap:anywhere}
th:first-child,td:first-child{text-align:left}
tr.ours td{font-weight:600;background:#eef6ff} .bad{color:#b00020} .good{color:#0a7d32}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.8em} img{max-width:100%}
"""


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(
    header: list[str],
    rows: list[list[object]],
    ours: set[int] | None = None,
    caption: str | None = None,
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=ours' if ours and i in ours else ''}>"
        + "".join(
            f"<td>{c if isinstance(c, str) and c.startswith('<') else _fmt(c)}</td>" for c in r
        )
        + "</tr>"
        for i, r in enumerate(rows)
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def _methods(doc: dict) -> list[tuple[str, dict]]:
    return list(doc["methods"].items())


def summary(doc: dict) -> str:
    v = doc["verdict"]
    metric = v["metric"].upper()
    lines = [
        f"<p>Evaluated {doc['protocol']['users']:,} users with "
        f"{doc['protocol']['relevant_items']:,} new relevant items in the test window "
        f"(from {html.escape(str(doc['protocol']['test_start']))}); models fitted on "
        f"{html.escape(doc['protocol']['fit'])}; full corpus of "
        f"{doc['protocol']['eligible_items']:,} eligible products, seen items excluded.</p>"
    ]
    if v.get("decided") is False:
        lines.append(
            f"<p class=bad>No verdict: {html.escape(str(v['reason']))}. recengine's "
            f"final list scores {metric} {v['final']:.4f}; the tables below show every "
            "method, but their differences here are within chance.</p>"
        )
    elif "best_baseline" in v:
        name = doc["methods"][v["best_baseline"]]["label"]
        css, where = ("good", "at or above") if v["beats_best_baseline"] else ("bad", "BELOW")
        lines.append(
            f"<p class={css}>recengine's final list scores {metric} "
            f"{v['final']:.4f}, {where} the best baseline, {html.escape(name)} "
            f"({v['best_baseline_value']:.4f}): {v['final_minus_best']:+.4f}, "
            f"paired t-test p = {v['p_value']:.3g}.</p>"
        )
    if v.get("oracle_share") is not None:
        lines.append(
            f"<p>It reaches {v['oracle_share']:.1%} of the oracle's {metric} (the "
            "generator's true utility ranking the same items).</p>"
        )
    if v.get("oracle_candidates_share") is not None:
        cand, final = v["oracle_candidates_share"], v["oracle_share"]
        lines.append(
            f"<p>Ordered by the true utility, the candidate set alone would reach "
            f"{cand:.1%} of the oracle. Of the gap of {1 - final:.1%}, "
            f"{1 - cand:.1%} is lost at the candidate stage and {cand - final:.1%} in "
            "the order the re-ranker gives the candidates.</p>"
        )
    p = doc["protocol"]
    if p.get("ranker_fallback"):
        lines.append(
            f"<p class=bad>The re-ranker was not used: {html.escape(str(p['ranker_fallback']))}"
            f". The lists are ordered by that signal instead.</p>"
        )
    elif p.get("training_lists"):
        lines.append(
            f"<p>The re-ranker learnt from {p['training_lists']:,} training lists "
            f"({p.get('list_mode', '-')} cutoffs) and kept {p.get('ranker_trees', 0):,} "
            "trees.</p>"
        )
    c = doc["candidates"]
    lines.append(
        f"<p>The candidate set (mean {c['mean_size']:.0f} items a user) holds "
        f"{c['recall']:.1%} of the relevant items: no later stage can do better.</p>"
    )
    return "".join(lines)


def metrics_table(doc: dict) -> str:
    """One table per cut-off K: every cut-off's columns side by side would run past the page
    (six metrics times each K)."""
    ks = doc["protocol"]["ks"]
    k0 = f"ndcg@{ks[0]}"
    has_oracle = any("oracle_share" in m for _, m in _methods(doc))
    ours = {i for i, (name, _) in enumerate(_methods(doc)) if name == "final"}
    tables = []
    for k in ks:
        cols = [f"{m}@{k}" for m in doc["metric_names"]]
        share = has_oracle and k == ks[0]
        header = ["method", "stage", *cols] + ([f"{k0} / oracle"] if share else [])
        rows = []
        for _, m in _methods(doc):
            row = [m["label"], m["stage"], *(m["metrics"][c] for c in cols)]
            if share:
                row.append(m.get("oracle_share", {}).get(k0))
            rows.append(row)
        tables.append(_table(header, rows, ours, caption=f"Lists cut at K = {k}"))
    return "".join(tables)


def significance(doc: dict) -> str:
    rows = [
        [
            doc["methods"][n]["label"],
            s["metric"],
            s["diff"],
            s["ci_low"],
            s["ci_high"],
            s["p_value"],
        ]
        for n, s in doc["significance"].items()
    ]
    return (
        "<p>Per-user differences, recengine's final list minus the method; 95% paired "
        "bootstrap interval over users and a paired t-test.</p>"
        + _table(["method", "metric", "difference", "CI low", "CI high", "p-value"], rows)
    )


def curves(doc: dict) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("ndcg", "recall"), strict=True):
        for name, m in _methods(doc):
            pts = m["curve"][metric]
            ax.plot(
                [int(k) for k in pts],
                list(pts.values()),
                marker=".",
                lw=2.5 if name == "final" else 1.2,
                label=m["label"],
                ls="--" if m["stage"] == "oracle" else "-",
            )
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return _png(fig)


def stages(doc: dict) -> str:
    ks = doc["protocol"]["ks"]
    kmax = f"recall@{max(ks)}"
    c = doc["candidates"]
    order = [
        n
        for n in ("two_tower", "reranked", "final", "oracle_candidates", "oracle")
        if n in doc["methods"]
    ]
    rows: list[list[object]] = [["candidate set", c["mean_size"], c["recall"], None, None]]
    for n in order:
        m = doc["methods"][n]["metrics"]
        rows.append(
            [doc["methods"][n]["label"], None, m[kmax], m[f"recall@{ks[0]}"], m[f"ndcg@{ks[0]}"]]
        )
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = ["candidates"] + [doc["methods"][n]["label"] for n in order]
    values = [c["recall"]] + [doc["methods"][n]["metrics"][f"recall@{ks[0]}"] for n in order]
    ax.barh(labels[::-1], values[::-1])
    ax.set_xlabel(f"recall (candidates: of the whole set; others: @{ks[0]})")
    return _table(
        ["stage", "mean size", f"recall (set or @{max(ks)})", f"recall@{ks[0]}", f"ndcg@{ks[0]}"],
        rows,
    ) + _png(fig)


def segments(doc: dict) -> str:
    k0 = doc["protocol"]["ks"][0]
    key = f"ndcg@{k0}"
    first = next(iter(doc["methods"].values()))
    segs = list(first["segments"])
    header = ["method"] + [f"{s} ({first['segments'][s]['users']:,})" for s in segs]
    rows = [[m["label"], *(m["segments"][s][key] for s in segs)] for _, m in _methods(doc)]
    fig, ax = plt.subplots(figsize=(11, 3.5))
    width = 0.8 / max(len(doc["methods"]), 1)
    for j, (_, m) in enumerate(_methods(doc)):
        ax.bar(
            [i + j * width for i in range(len(segs))],
            [m["segments"][s][key] or 0 for s in segs],
            width,
            label=m["label"],
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(segs))], segs, fontsize=8)
    ax.set_ylabel(key)
    ax.legend(fontsize=7, ncol=4)
    cold_keys = list(first["cold_items"])
    cold = _table(
        ["method", *(f"cold items {k}" for k in cold_keys)],
        [[m["label"], *(m["cold_items"][k] for k in cold_keys)] for _, m in _methods(doc)],
    )
    return (
        f"<p>{key} by user segment (users in brackets).</p>"
        + _table(header, rows)
        + _png(fig)
        + f"<p>Recall of relevant items that had no interaction in the fit "
        f"window ({doc['protocol']['cold_items']:,} such eligible items).</p>" + cold
    )


def beyond(doc: dict) -> str:
    names = ["coverage", "novelty", "diversity", "popularity_percentile"]
    rows = [[m["label"], *(m["beyond"][n] for n in names)] for _, m in _methods(doc)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in _methods(doc):
        b = m["beyond"]
        ax.scatter(b["popularity_percentile"], b["coverage"], s=80 if name == "final" else 30)
        ax.annotate(m["label"], (b["popularity_percentile"], b["coverage"]), fontsize=7)
    ax.set_xlabel("mean popularity percentile of listed items")
    ax.set_ylabel("catalogue coverage")
    ax.grid(alpha=0.3)
    return (
        f"<p>Lists of {doc.get('beyond_k', 10)} items. Novelty: mean self-information "
        "(bits); diversity: share of item pairs in different categories.</p>"
        + _table(["method", *names], rows)
        + _png(fig)
    )


def ads(doc: dict) -> str:
    a = doc.get("ads")
    if not a:
        return "<p>No ad impression log with clicks in the validation and test windows.</p>"
    cm = a["click_model"]
    out = _table(
        [
            "impressions",
            "click rate",
            "AUC",
            "log loss",
            "log loss (raw)",
            "log loss (base rate)",
            "ECE",
            "ECE (raw)",
        ],
        [
            [
                cm["impressions"],
                cm["click_rate"],
                cm["auc"],
                cm["logloss"],
                cm["logloss_raw"],
                cm["logloss_base_rate"],
                cm["ece"],
                cm["ece_raw"],
            ]
        ],
    )
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    r = cm["reliability"]
    hi = max(r["predicted"] + r["observed"] + [0.01])
    ax.plot([0, hi], [0, hi], ls="--", c="grey")
    ax.plot(r["predicted"], r["observed"], marker="o")
    ax.set_xlabel("predicted click probability (calibrated)")
    ax.set_ylabel("observed click rate")
    ax.set_title("reliability diagram")
    out += _png(fig)
    p = a.get("policy")
    if p:
        rows = [
            ["logging policy (observed)", p["logged_click_rate"], p["logged_revenue"], None, None],
            ["recengine eCPM policy, IPS", p["ips_click_rate"], p["ips_revenue"], None, None],
            ["recengine eCPM policy, SNIPS", p["snips_click_rate"], p["snips_revenue"], None, None],
        ]
        if "true_revenue" in p:
            rows.append(
                [
                    "recengine eCPM policy, true (generator)",
                    p["true_click_rate"],
                    p["true_revenue"],
                    None,
                    None,
                ]
            )
            rows.append(["oracle policy, true", None, p["oracle_revenue"], None, None])
        for r_ in rows:
            r_[3], r_[4] = p["requests"], p["effective_sample_size"]
        out += (
            "<p>Counterfactual estimates on the logged test requests, from the logging "
            "propensities; revenue is per request (click x bid).</p>"
            + _table(["policy", "click rate", "revenue", "requests", "effective sample"], rows)
        )
    return out


def choices(doc: dict) -> str:
    """What the nightly tried on its validation data and what it kept."""
    train = (doc.get("nightly") or {}).get("train") or {}
    rr = (doc.get("nightly") or {}).get("rerank") or {}
    p = doc.get("protocol") or {}
    if not rr and p.get("ranker_tried"):  # `recengine evaluate`: the evaluation's own fit
        rr = {
            "tried": p["ranker_tried"],
            "holdout_ndcg": p.get("ranker_holdout_ndcg"),
            "num_leaves": p.get("ranker_num_leaves"),
            "order": None,
            **{f"holdout_{k}_order_ndcg": v for k, v in (p.get("ranker_orders") or {}).items()},
        }
    rows: list[list[object]] = []
    if train.get("valid_recall_by_epoch"):
        rows.append(
            [
                f"two-tower epochs (validation recall@{train.get('recall_k')})",
                train["valid_recall_by_epoch"],
                str(train.get("epochs")),
            ]
        )
    if rr.get("tried"):
        rows.append(
            [
                "re-ranker num_leaves (held-out NDCG@10)",
                rr["tried"],
                str(rr.get("num_leaves") or "-"),
            ]
        )
    orders = {
        k[len("holdout_") : -len("_order_ndcg")]: v
        for k, v in rr.items()
        if k.startswith("holdout_") and k.endswith("_order_ndcg") and v is not None
    }
    if orders:
        chosen = rr.get("order") or "re-ranker"
        tried = " ".join(f"{k}:{float(v):.4f}" for k, v in orders.items())
        rows.append(
            [
                "list order (held-out NDCG@10)",
                f"re-ranker:{float(rr.get('holdout_ndcg') or 0):.4f} " + tried,
                chosen,
            ]
        )
    if not rows:
        return "<p>No choices recorded by this run.</p>"
    return (
        "<p>Each setting below was tried on data the published models are not scored on "
        "(the validation window, or the re-ranker's held-out users); the last column is "
        "what the run kept.</p>" + _table(["setting", "tried: figure", "kept"], rows)
    )


def timings(doc: dict) -> str:
    parts = []
    for title, secs in (
        ("nightly job stages", doc.get("nightly_seconds") or {}),
        ("evaluation steps", doc.get("seconds") or {}),
    ):
        if not secs:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(secs) + 1))
        ax.barh(list(secs)[::-1], list(secs.values())[::-1])
        ax.set_xlabel("seconds")
        ax.set_title(title)
        parts.append(
            _table(["step", "seconds"], [[k, float(v)] for k, v in secs.items()]) + _png(fig)
        )
    return "".join(parts) or "<p>No timings recorded.</p>"


def config(doc: dict) -> str:
    return f"<pre>{html.escape(json.dumps(doc.get('config', {}), indent=2, default=str))}</pre>"


RENDER = {
    "summary": summary,
    "metrics": metrics_table,
    "significance": significance,
    "curves": curves,
    "stages": stages,
    "segments": segments,
    "beyond": beyond,
    "ads": ads,
    "choices": choices,
    "timings": timings,
    "config": config,
}


NEEDS_EVALUATION = set(SECTIONS) - {"choices", "timings", "config"}


def _section(sid: str, doc: dict) -> str:
    if sid in NEEDS_EVALUATION and "methods" not in doc:
        return (
            "<p>No offline evaluation in this report ([evaluation] enabled = false, or a "
            "split without a test window).</p>"
        )
    return RENDER[sid](doc)


def render(doc: dict) -> str:
    """The whole page for a metrics document."""
    note = (
        f"<p>Models unchanged since version {html.escape(doc['evaluated_in'])} (an "
        "incremental run): its evaluation is shown.</p>"
        if doc.get("evaluated_in")
        else ""
    )
    body = note + "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{_section(sid, doc)}</section>'
        for sid, title in SECTIONS.items()
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>recengine evaluation"
        f"</title><style>{STYLE}</style></head><body><h1>recengine evaluation</h1>{body}"
        "</body></html>"
    )


def write_report(folder: Path, doc: dict) -> Path:
    """`folder`/metrics.json and `folder`/index.html, each written atomically."""
    folder = Path(folder)
    with atomic_path(folder / "metrics.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
    with atomic_path(folder / "index.html") as tmp:
        tmp.write_text(render(doc))
    return folder / "index.html"
