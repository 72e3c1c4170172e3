"""Explaining the product lists (`why`) against scoring them, per 1,000 users with ~400
candidates and k = 20 listed rows each: the re-ranker's predict over every candidate (the recs
stage's scoring) versus the feature contributions of the listed rows, with TreeSHAP over every
tree (as before) and with the decision-path attribution (`[rerank] explain_shap_trees`, 0 by
default; other values explain their first trees with TreeSHAP), and the share of explaining
in scoring + explaining (goal: under 20%). It also reports how often each attribution names
the same leading features as whole-model TreeSHAP, and that every row sums to its score.

The model is a synthetic one (`--trees` trees of `--leaves` leaves, LambdaRank or XE-NDCG, on
ranking data of `--features` features, some missing), or a version's rerank/model.txt with
that version's own candidates (`--version`). Whole-model TreeSHAP is timed on the first
`--shap-users` users only and scaled to 1,000 users. Fitting the synthetic model takes a few
minutes on 2 cores.

    python bench/bench_explain.py [--version VERSION_DIR] [--users 1000] [--candidates 400]
        [--k 20] [--trees 700] [--leaves 63] [--features 60] [--objective rank_xendcg]
        [--shap-trees 0,100] [--shap-users 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from harness import Report, timed

from engine.rerank.config import RerankConfig
from engine.rerank.explain import contributions, model_trees, path_table
from engine.rerank.lists import with_explanations
from engine.rerank.ranker import best_per_group, feature_matrix, score_frame

ALL_TREES = 1 << 30


def synthetic_features(rng: np.random.Generator, rows: int, n_features: int) -> np.ndarray:
    """Features of mixed shapes, like the re-ranker's: scores, counts, ratios, 8% missing."""
    x = rng.normal(size=(rows, n_features))
    x[:, 1::4] = rng.poisson(3.0, size=x[:, 1::4].shape)  # counts
    x[:, 2::4] = rng.lognormal(0.0, 1.0, size=x[:, 2::4].shape)  # prices, ratios
    x[rng.random(x.shape) < 0.08] = np.nan
    return x


def synthetic_score(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A relevance with a few strong features, interactions and noise."""
    z = np.nan_to_num(x)
    w = rng.normal(size=x.shape[1]) * (rng.random(x.shape[1]) < 0.4)
    return (
        z @ w * 0.3
        + np.sin(2 * z[:, 0])
        + z[:, 3] * z[:, 4]
        + np.log1p(z[:, 2])
        + 0.3 * np.sqrt(z[:, 1])
        + rng.normal(size=len(z))
    )


def synthetic_model(args: argparse.Namespace) -> tuple[lgb.Booster, pl.DataFrame]:
    """A ranker of `args.trees` trees fitted on synthetic lists, and `args.users` users'
    candidate frames of `args.candidates` rows drawn alike."""
    rng = np.random.default_rng(0)
    queries, per = 300, 200
    x = synthetic_features(rng, queries * per, args.features)
    s = synthetic_score(x, np.random.default_rng(1)).reshape(queries, per)
    rank = np.argsort(np.argsort(-s, axis=1), axis=1)
    y = np.select([rank < 3, rank < 10, rank < 30], [3.0, 2.0, 1.0], 0.0).ravel()
    cfg = RerankConfig(
        objective=args.objective, num_leaves=args.leaves, min_data_in_leaf=20, learning_rate=0.05
    )
    t = time.perf_counter()
    booster = lgb.train(
        cfg.params(),
        lgb.Dataset(x, label=y, group=np.full(queries, per)),
        num_boost_round=args.trees,
    )
    print(
        f"fitted {booster.current_iteration()} trees in {time.perf_counter() - t:.0f} s", flush=True
    )
    n = args.users * args.candidates
    names = [f"f{j}" for j in range(args.features)]
    cand = synthetic_features(np.random.default_rng(2), n, args.features)
    frame = pl.DataFrame(
        {
            "user_idx": np.repeat(np.arange(1, args.users + 1), args.candidates),
            "item_idx": np.tile(np.arange(1, args.candidates + 1), args.users),
            **{c: cand[:, j] for j, c in enumerate(names)},
        }
    )
    booster = lgb.Booster(model_str=booster.model_to_string())  # as the lists load it
    return booster, frame.rename(dict(zip(names, booster.feature_name(), strict=True)))


def version_model(args: argparse.Namespace) -> tuple[lgb.Booster, pl.DataFrame, int]:
    """A version's re-ranker, `args.users` of its users' candidate frames and its k."""
    from engine.candidates import default_sources, generate_candidates
    from engine.rerank.features import feature_frame
    from engine.version import full_context
    from serving.state import VersionState

    state = VersionState.load(args.version.resolve())  # what the online path loads
    ctx = full_context(state.folder, state.cfg.candidates)  # the frames read every table
    users = ctx.fs.users["user_idx"].to_numpy().astype(np.int64)
    users = np.sort(
        np.random.default_rng(0).choice(
            users[users > 0], min(args.users, int((users > 0).sum())), replace=False
        )
    )
    frame = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
    return state.booster, frame, state.cfg.jobs.k  # type: ignore[return-value]


def leading(contrib: np.ndarray, top: int = 3) -> np.ndarray:
    return np.argsort(-np.abs(contrib[:, :-1]), axis=1)[:, :top]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--version", type=Path, help="a version (or staging) folder")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=400, help="per user (synthetic)")
    ap.add_argument("--k", type=int, default=20, help="listed rows per user (synthetic)")
    ap.add_argument("--trees", type=int, default=700)
    ap.add_argument("--leaves", type=int, default=63)
    ap.add_argument("--features", type=int, default=60)
    ap.add_argument("--objective", choices=["rank_xendcg", "lambdarank"], default="rank_xendcg")
    ap.add_argument(
        "--shap-trees", default="0,100", help="values of [rerank] explain_shap_trees to time"
    )
    ap.add_argument(
        "--shap-users",
        type=int,
        default=100,
        help="users whose rows whole-model TreeSHAP is timed on",
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.version is not None:
        booster, frame, k = version_model(args)
    else:
        (booster, frame), k = synthetic_model(args), args.k
    names = booster.feature_name()
    users = frame["user_idx"].n_unique()
    per_1k = 1000 / users
    report = Report("explain", args)
    where = (
        f"{model_trees(booster)} trees of {args.leaves if args.version is None else '?'}"
        f" leaves, {len(names)} features, {frame.height / users:.0f} candidates and "
        f"k = {k} per user"
    )
    print(where, flush=True)

    score_s = [
        s * per_1k
        for s in timed(lambda: score_frame(booster, frame, names), args.repeats, warmup=0)
    ]
    report.add(f"score every candidate ({where})", score_s, "s / 1,000 users")
    scores = score_frame(booster, frame, names)
    listed = frame[best_per_group(frame["user_idx"].to_numpy(), scores, k)]
    score_med = statistics.median(score_s)

    def share(explain_s: list[float]) -> float:
        e = statistics.median(explain_s)
        return 100 * e / (score_med + e)

    lists = listed.select("user_idx", "item_idx").with_columns(
        sources=pl.lit("ann"), rules=pl.lit("")
    )  # what with_explanations reads of a list

    # whole-model TreeSHAP, as before: on the first users' lists, scaled to all of them
    first = pl.col("user_idx").is_in(
        lists["user_idx"].unique(maintain_order=True).head(args.shap_users).implode()
    )
    few_lists, few_frame = lists.filter(first), frame.filter(first)
    few_users = few_lists["user_idx"].n_unique()
    t = time.perf_counter()
    with_explanations(few_lists, few_frame, booster, names, shap_trees=ALL_TREES)
    before = [(time.perf_counter() - t) * users / few_users * per_1k]
    report.add(
        f"explain the listed rows, TreeSHAP over every tree (before; timed on {few_users} users)",
        before,
        "s / 1,000 users",
    )
    report.add("explain share of score + explain, before", share(before), "%")
    report.add("path table, built once per model (and cached)", _build_seconds(booster), "s")

    few_x = feature_matrix(listed.filter(first), names)
    exact = contributions(booster, few_x, shap_trees=ALL_TREES)
    raw = booster.predict(few_x, raw_score=True)
    for shap in (int(v) for v in args.shap_trees.split(",")):
        tag = (
            "decision paths in every tree"
            if shap == 0
            else f"TreeSHAP over the first {shap} trees, decision paths after"
        )
        got = contributions(booster, few_x, shap_trees=shap)  # also builds the path table
        after = [
            s * per_1k
            for s in timed(
                lambda shap=shap: with_explanations(lists, frame, booster, names, shap_trees=shap),
                args.repeats,
                warmup=0,
            )
        ]
        report.add(
            f"explain the listed rows, {tag}",
            after,
            "s / 1,000 users",
            ratio=("faster than before", before[0] / statistics.median(after)),
        )
        report.add(
            f"explain share of score + explain, {tag}",
            share(after),
            "%",
            goal="< 20%" if shap == 0 else "",
            met=share(after) < 20 if shap == 0 else None,
        )
        same1 = float(np.mean(leading(got, 1)[:, 0] == leading(exact, 1)[:, 0]))
        same3 = float(
            np.mean(
                [
                    len(set(a) & set(b)) / 3
                    for a, b in zip(leading(got), leading(exact), strict=True)
                ]
            )
        )
        report.add(f"{tag}: leading feature as whole-model TreeSHAP's", 100 * same1, "% rows")
        report.add(f"{tag}: top 3 features shared with whole-model TreeSHAP", 100 * same3, "%")
        report.add(
            f"{tag}: largest |contributions + bias - raw score|",
            float(np.abs(got.sum(axis=1) - raw).max()),
            "",
        )
    report.finish()


def _build_seconds(booster: lgb.Booster) -> float:
    """Seconds to build the path table of the whole model from its text (a fresh copy, so
    the cached one does not answer)."""
    fresh = lgb.Booster(model_str=booster.model_to_string())
    fresh.best_iteration = booster.best_iteration
    t = time.perf_counter()
    path_table(fresh, 0, model_trees(fresh))
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
