"""Benchmark 3, batch recommend-all: users/s of retrieval alone beside implicit's ALS
`recommend` for the same users, and of the full product path (retrieval, candidates,
re-ranking, rules) on a published version.

Retrieval against ALS: implicit's ALS is fitted on the data set's positives (user x item,
weighted by event); both sides then answer top-100 for the same users, seen items excluded:
implicit with its `recommend` (exact, BLAS, filtering liked items) on its factors; recengine
with `build_index` (the kind `auto` picks for the catalogue, tuned to `--recall-target`) and
`ItemIndex.search(exclude=seen)` as the `ann` candidate source calls it, on the same factors
L2-normalised (the unit vectors the two-tower model serves; the dimension, the users, k and
the exclusions are the same). Recall@100 is against exact search on the same vectors with the
same exclusions.

The full path runs the nightly job's list code (the same calls as the `lists` stage, without
writing) over a sample of users of the version `--config`'s artifacts root serves.

    python bench/bench_recommend_all.py --data artifacts/bench-data [--users 1000000]
        [--config artifacts/bench-nightly/1000000/config.toml]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from harness import Report, timed
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from engine.index import IndexConfig, build_index
from pipelines.config import load_config

WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


def user_items(data: Path) -> sp.csr_matrix:
    """Positives as a (users x items) CSR matrix of summed event weights."""
    pos = (
        pl.scan_parquet(data / "interactions.parquet")
        .filter(pl.col("event").is_in(list(WEIGHTS)))
        .select(
            pl.col("user_id").rank("dense").cast(pl.Int64) - 1,
            pl.col("item_id").rank("dense").cast(pl.Int64) - 1,
            pl.col("event").replace_strict(WEIGHTS, return_dtype=pl.Float32),
        )
        .collect()
    )
    u, i, w = (pos[c].to_numpy() for c in pos.columns)
    m = sp.csr_matrix((w, (u, i)), shape=(u.max() + 1, i.max() + 1), dtype=np.float32)
    m.sum_duplicates()
    return m


def seen_lists(m: sp.csr_matrix, users: np.ndarray) -> list[np.ndarray]:
    return [m.indices[m.indptr[u] : m.indptr[u + 1]].astype(np.int64) for u in users]


def retrieval(
    report: Report, m: sp.csr_matrix, users: np.ndarray, args: argparse.Namespace
) -> None:
    t0 = time.perf_counter()
    als = AlternatingLeastSquares(factors=args.factors, iterations=args.iterations, random_state=0)
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, BLAS single
        als.fit(m, show_progress=False)
    uf, itf = (
        np.ascontiguousarray(f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))
        for f in (als.user_factors, als.item_factors)
    )
    print(
        f"ALS fitted ({args.factors} factors, {args.iterations} iterations) on "
        f"{m.shape[0]:,} users x {m.shape[1]:,} items, {m.nnz:,} pairs in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    k, batch = 100, args.batch
    items = np.arange(m.shape[1], dtype=np.int64)
    cfg = IndexConfig(k=k, recall_target=args.recall_target, eval_queries=500, use_gpu=False)
    t0 = time.perf_counter()
    index, _figs = build_index(
        itf, items, cfg, queries=uf[np.random.default_rng(1).choice(len(uf), 2000, replace=False)]
    )
    params = ", ".join(f"{a}={b}" for a, b in index.params.items())
    print(
        f"index: {index.kind} ({params}), built and tuned in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    def ours() -> None:
        for a in range(0, len(users), batch):
            b = users[a : a + batch]
            index.search(uf[b], k, exclude=seen_lists(m, b))

    def theirs() -> None:
        for a in range(0, len(users), batch):
            b = users[a : a + batch]
            als.recommend(b, m[b], N=k, filter_already_liked_items=True)  # raw factors

    def flat() -> None:
        for a in range(0, len(users), batch):
            b = users[a : a + batch]
            exact.search(uf[b], k, exclude=seen_lists(m, b))

    exact, _ = build_index(itf, items, IndexConfig(kind="flat", k=k, use_gpu=False))
    ours_s = timed(ours, args.repeats, warmup=0)
    flat_s = timed(flat, args.repeats, warmup=0)
    theirs_s = timed(theirs, args.repeats, warmup=0)
    ours_rate = [len(users) / s for s in ours_s]
    theirs_rate = [len(users) / s for s in theirs_s]
    # recall against exact search with the same exclusions, on a sample
    sample = users[:: max(1, len(users) // args.recall_users)][: args.recall_users]
    _, got = index.search(uf[sample], k, exclude=seen_lists(m, sample))
    _, truth = exact.search(uf[sample], k, exclude=seen_lists(m, sample))
    recall = float(
        np.mean(
            [
                len(np.intersect1d(g[g >= 0], t[t >= 0])) / max(1, (t >= 0).sum())
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )
    als_items, _ = als.recommend(sample, m[sample], N=k, filter_already_liked_items=True)
    overlap = float(
        np.mean(
            [
                len(np.intersect1d(a, t[t >= 0])) / max(1, (t >= 0).sum())
                for a, t in zip(als_items, truth, strict=True)
            ]
        )
    )
    ratio = statistics.median(ours_rate) / statistics.median(theirs_rate)
    report.add(
        f"implicit ALS recommend, top-{k}, seen filtered ({len(users):,} users)",
        theirs_rate,
        "users/s",
        note=f"its top-{k} (raw factors) shares {overlap:.0%} with "
        f"the exact top-{k} of the normalised ones",
    )
    report.add(
        f"retrieval alone: {index.kind} search, top-{k}, seen excluded ({len(users):,} users)",
        ours_rate,
        "users/s",
        ratio=("implicit ALS", ratio),
        goal=">= 10x ALS at recall@100 >= 0.99",
        met=ratio >= 10 and recall >= 0.99,
        note=params,
    )
    report.add(f"retrieval alone: recall@{k} vs exact ({len(sample):,} users)", recall, "")
    report.add(
        f"exact search (flat index, BLAS), top-{k}, seen excluded",
        [len(users) / s for s in flat_s],
        "users/s",
        ratio=(
            "implicit ALS",
            len(users) / statistics.median(flat_s) / statistics.median(theirs_rate),
        ),
    )


def full_path(report: Report, config: Path, root: Path | None, users_n: int, repeats: int) -> None:
    """Users/s of the `lists` stage's work (no explanations, nothing written)."""
    from engine.candidates import default_sources, generate_candidates
    from engine.config import EngineConfig
    from engine.rerank.ranker import load_ranker
    from engine.scoring import ListScorer
    from engine.version import version_context
    from pipelines.dataset import FeatureSet

    cfg = load_config(config, EngineConfig)
    folder = (Path(root or cfg.artifacts.root) / "current").resolve()
    fs = FeatureSet.load(folder)
    ctx = version_context(folder, fs, cfg.candidates, use_gpu=cfg.index.use_gpu)
    scorer = ListScorer.build(ctx, load_ranker(folder / "rerank"), cfg.rules, cfg.rerank)
    sources = default_sources(ctx)
    all_users = fs.users["user_idx"].to_numpy().astype(np.int64)
    users = np.random.default_rng(0).choice(all_users[all_users > 0], users_n, replace=False)
    chunk = cfg.jobs.user_chunk
    retrieval_only = sources[:1]  # the ann source: the two-tower search, seen excluded

    def lists() -> None:
        for a in range(0, len(users), chunk):
            scorer.lists(users[a : a + chunk], k=cfg.jobs.k)

    def ann() -> None:
        for a in range(0, len(users), chunk):
            generate_candidates(retrieval_only, users[a : a + chunk])

    full = [len(users) / s for s in timed(lists, repeats, warmup=0)]
    alone = [len(users) / s for s in timed(ann, repeats, warmup=0)]
    where = f"{ctx.index.size:,} products, {len(all_users) - 1:,} users"  # type: ignore[union-attr]
    report.add(
        f"full product path: candidates + features + re-rank + rules ({where})",
        full,
        "users/s",
        ratio=(
            "of the version's ann retrieval alone",
            statistics.median(full) / statistics.median(alone),
        ),
    )
    kind = ctx.index.kind  # type: ignore[union-attr]
    report.add(f"the version's ann candidate source alone ({kind})", alone, "users/s")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a `recengine generate` folder")
    ap.add_argument("--users", type=int, default=0, help="users to recommend for (0: all)")
    ap.add_argument("--batch", type=int, default=4096, help="users per search call")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument(
        "--iterations",
        type=int,
        default=3,
        help="ALS sweeps (speed of `recommend` does not depend on them)",
    )
    ap.add_argument("--recall-target", type=float, default=0.99)
    ap.add_argument("--recall-users", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--config", type=Path, help="a nightly config whose published version the full path runs on"
    )
    ap.add_argument("--artifacts", type=Path, help="artifacts root (default: the config's)")
    ap.add_argument("--full-users", type=int, default=5000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    report = Report("recommend_all", args)
    t0 = time.perf_counter()
    m = user_items(args.data)
    print(
        f"{args.data}: {m.shape[0]:,} users x {m.shape[1]:,} items, {m.nnz:,} positive pairs "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    n = args.users or m.shape[0]
    users = (
        np.sort(np.random.default_rng(0).choice(m.shape[0], n, replace=False))
        if n < m.shape[0]
        else np.arange(n)
    )
    retrieval(report, m, users.astype(np.int64), args)
    if args.config:
        full_path(report, args.config, args.artifacts, args.full_users, args.repeats)
    report.finish()


if __name__ == "__main__":
    main()
