"""Candidate recall on a data set: the share of each test user's next items (new to them,
products) that each candidate source, and their union, contains.

Features are built as of the start of the test window; the two-tower model is trained on the
training window (early-stopped on the validation window) and then applied to the histories as
of the test start; the index is built by the factory from the item vectors.

    python bench/bench_candidate_recall.py --config data_samples/config.toml
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import polars as pl

from embeddings.retrieval_eval import held_out
from engine.candidates import candidate_recall, default_sources, generate_candidates, merge
from engine.config import EngineConfig
from engine.retrieval import retrieval_context, train_retrieval
from pipelines.config import load_config
from pipelines.dataset import build_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="data_samples/config.toml")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.config, EngineConfig)
    trained = train_retrieval(cfg)
    # refit on train + valid with the early-stopped epoch count, as a published model would be
    refit = train_retrieval(cfg, window="valid", epochs=trained.result.best_epoch + 1)
    fs = build_features(cfg, window="valid")  # as of the test start
    ctx, figures = retrieval_context(cfg, fs, refit)
    index = ctx.index
    test = held_out(fs, split="test", before=("train", "valid"))
    truth = pl.DataFrame(
        {
            "user_idx": np.repeat(test.users, np.diff(test.truth.offsets)),
            "item_idx": test.truth.values,
        }
    )
    t0 = time.perf_counter()
    sources = default_sources(ctx)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cands = generate_candidates(sources, test.users)
    t_gen = time.perf_counter() - t0
    names = [s.name for s in sources]
    recall = candidate_recall(cands, truth, sources=names)
    sizes = {n: int(cands[f"{n}_rank"].is_not_null().sum()) / len(test) for n in names}
    print(
        f"test users {len(test):,}, next items {truth.height:,}; index {index.kind} "
        f"recall@{figures['recall_k']} {figures['recall']:.3f}"
    )
    print(
        f"sources built in {t_build:.1f} s, candidates for all test users in {t_gen:.1f} s "
        f"({len(test) / t_gen:,.0f} users/s)"
    )
    for n in [*names, "union"]:
        per_user = sizes.get(n, cands.height / len(test))
        print(f"  {n:10s} candidate recall {recall[n]:.4f}   {per_user:6.1f} candidates/user")
    # the same number of candidates from popularity alone, for scale
    budget = round(cands.height / len(test))
    pop = ctx.fs.popularity.select(
        pl.col("item_idx").cast(pl.Int64), pl.col("count_all").cast(pl.Float64).alias("score")
    )
    pop_c = ctx.finish(pl.DataFrame({"user_idx": test.users}).join(pop, how="cross"), budget)
    pop_recall = candidate_recall(merge({"popularity": pop_c}), truth, sources=["popularity"])
    print(f"  popularity alone, {budget} per user: candidate recall {pop_recall['union']:.4f}")


if __name__ == "__main__":
    main()
