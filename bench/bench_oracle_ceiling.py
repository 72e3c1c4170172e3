"""How close can any learner get to the oracle on a generated set?

The oracle ranks by the generator's true utility: every user's true taste. A learner sees only
the user's events. This script gives a learner more than recengine ever has, the generator's
TRUE item factors and biases, estimates each user's taste from their views before the test
window (the MAP of the generator's own choice model, taste p + f(t) drift at each view's time
t, Gaussian priors of the true variances scaled by `--priors`), ranks the unseen products by the estimated utility, and scores NDCG@10 on the
test window beside the oracle under one protocol (test window: the last 7 days; relevance: the
strongest event, gain 2^grade - 1; seen items excluded; every user with a new relevant
product). Its share of the oracle is a ceiling for a learner of user taste from this much data,
against which recengine's share in the evaluation report can be read.

    python bench/bench_oracle_ceiling.py [--data data_samples] [--priors 1,3,10]

Writes artifacts/bench/oracle_ceiling.json.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch
from harness import OUT, Report

from pipelines.synthetic.truth import GroundTruth

GRADES = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}
K = 10
BINS = 8


def mean_ndcg(util: np.ndarray, relevant: list[dict[int, int]], seen: list[np.ndarray]) -> float:
    """Mean NDCG@K of each row's top K by `util` (seen columns excluded)."""
    out = []
    for row, rel, skip in zip(util, relevant, seen, strict=True):
        s = row.copy()
        s[skip] = -np.inf
        top = np.argpartition(-s, K)[:K]
        top = top[np.argsort(-s[top])]
        gain = {c: 2.0**g - 1 for c, g in rel.items()}
        dcg = sum(gain.get(int(c), 0.0) / np.log2(r + 2) for r, c in enumerate(top))
        ideal = sorted(gain.values(), reverse=True)[:K]
        out.append(dcg / sum(g / np.log2(r + 2) for r, g in enumerate(ideal)))
    return float(np.mean(out))


def map_taste(
    q: torch.Tensor,
    b: torch.Tensor,
    tau: float,
    users: np.ndarray,
    cols: np.ndarray,
    f: np.ndarray,
    n: int,
    prior_var: float,
    drift_var: float,
    scale: float,
    at: float,
) -> np.ndarray:
    """(n, d) MAP taste at time `at` of each user, p + at * drift, from their chosen columns
    at times `f` (softmax over all columns of (p + f * drift) . q / tau + b; the generator's
    own model, Gaussian priors of the true variances times `scale`)."""
    p = torch.zeros(n, q.shape[1], requires_grad=True)
    d = torch.zeros(n, q.shape[1], requires_grad=True)
    opt = torch.optim.Adam([p, d], lr=0.05)
    # views in 8 time bins a user: one softmax per (user, bin) instead of one per view
    k = np.minimum((f * BINS).astype(np.int64), BINS - 1)
    centre = torch.from_numpy(((np.arange(BINS) + 0.5) / BINS).astype(np.float32))
    iu, ik, ic = (torch.from_numpy(a) for a in (users, k, cols))
    for _ in range(300):
        opt.zero_grad()
        taste = p[:, None, :] + centre[None, :, None] * d[:, None, :]  # (n, BINS, dim)
        logits = taste @ q.T / tau + b  # (n, BINS, I)
        lse = torch.logsumexp(logits, 2)
        ll = (logits[iu, ik, ic] - lse[iu, ik]).sum()
        prior = (p**2).sum() / (2 * prior_var) + (d**2).sum() / (2 * drift_var)
        (-ll + scale * prior).backward()
        opt.step()
    return (p + at * d).detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("data_samples"))
    ap.add_argument("--priors", default="1,3,10", help="prior strength multipliers tried")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    gt = GroundTruth.load(args.data / "ground_truth")
    inter = pl.read_parquet(args.data / "interactions.parquet")
    items = pl.read_parquet(args.data / "items.parquet")
    test_start = inter["ts"].max() - timedelta(days=7)
    fit, test = inter.filter(pl.col("ts") < test_start), inter.filter(pl.col("ts") >= test_start)
    prow = gt.rows_of(items.filter(pl.col("kind") == "product")["item_id"], gt.item_ids)
    prow = prow[prow >= 0]
    col = np.full(len(gt.item_ids), -1, np.int64)
    col[prow] = np.arange(len(prow))

    fu, fc = gt.rows_of(fit["user_id"], gt.user_ids), col[gt.rows_of(fit["item_id"], gt.item_ids)]
    tu, tc = gt.rows_of(test["user_id"], gt.user_ids), col[gt.rows_of(test["item_id"], gt.item_ids)]
    grade = test["event"].replace_strict(GRADES, default=0).to_numpy()
    seen_pairs = set(zip(fu.tolist(), fc.tolist(), strict=True))
    rel: dict[int, dict[int, int]] = {}
    for u, c, g in zip(tu.tolist(), tc.tolist(), grade.tolist(), strict=True):
        if u >= 0 and c >= 0 and g > 0 and (u, c) not in seen_pairs:
            rel.setdefault(u, {})[c] = max(rel.get(u, {}).get(c, 0), g)
    users = np.array(sorted(rel))
    row_of = np.full(len(gt.user_ids), -1, np.int64)
    row_of[users] = np.arange(len(users))
    ok = (fu >= 0) & (fc >= 0)
    seen = [np.unique(fc[ok & (fu == u)]) for u in users]
    relevant = [rel[u] for u in users.tolist()]
    view = ok & (fit["event"] == "view").to_numpy() & (row_of[np.maximum(fu, 0)] >= 0)

    q, b = gt.item_factor[prow], gt.item_bias[prow]
    f = gt._f(test_start + timedelta(days=3.5))
    oracle = mean_ndcg(
        (gt.user_factor[users] + f * gt.user_drift[users]) @ q.T / gt.tau + b, relevant, seen
    )
    popular = mean_ndcg(np.tile(b, (len(users), 1)), relevant, seen)
    report = Report("oracle_ceiling", args)
    print(
        f"{len(users):,} test users, {view.sum() / len(users):.1f} views each before the test "
        f"window; oracle NDCG@{K} {oracle:.4f}, true item bias alone {popular:.4f}"
    )
    report.add("oracle NDCG@10", oracle, "")
    report.add("true item bias alone NDCG@10", popular, "", ratio=("oracle", popular / oracle))
    prior_var = float(gt.user_factor.var(0).mean())
    drift_var = float(gt.user_drift.var(0).mean())
    when = np.array([gt._f(t) for t in fit["ts"].filter(pl.Series(view)).to_list()])
    for scale in (float(s) for s in args.priors.split(",")):
        taste = map_taste(
            torch.from_numpy(q),
            torch.from_numpy(b),
            gt.tau,
            row_of[fu[view]],
            fc[view],
            when,
            len(users),
            prior_var,
            drift_var,
            scale,
            f,
        )
        got = mean_ndcg(taste @ q.T / gt.tau + b, relevant, seen)
        print(
            f"  MAP taste (prior x{scale:g}) with the true item factors: NDCG@{K} {got:.4f}, "
            f"{got / oracle:.3f} of the oracle"
        )
        report.add(
            f"MAP taste, prior x{scale:g}, true item factors NDCG@10",
            got,
            "",
            ratio=("oracle", got / oracle),
        )
    report.finish(args.out)


if __name__ == "__main__":
    main()
