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
from engine.candidates import candidate_recall, default_sources, generate_candidates
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
    fs = build_features(cfg, window="valid")  # as of the test start
    ctx, figures = retrieval_context(cfg, fs, trained)
    index = ctx.index
    test = held_out(fs, split="test", before=("train", "valid"))
    truth = pl.DataFrame({"user_idx": np.repeat(test.users, np.diff(test.truth.offsets)),
                          "item_idx": test.truth.values})
    t0 = time.perf_counter()
    sources = default_sources(ctx)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cands = generate_candidates(sources, test.users)
    t_gen = time.perf_counter() - t0
    names = [s.name for s in sources]
    recall = candidate_recall(cands, truth, sources=names)
    sizes = {n: int(cands[f"{n}_rank"].is_not_null().sum()) / len(test) for n in names}
    print(f"test users {len(test):,}, next items {truth.height:,}; index {index.kind} "
          f"recall@{figures['recall_k']} {figures['recall']:.3f}")
    print(f"sources built in {t_build:.1f} s, candidates for all test users in {t_gen:.1f} s "
          f"({len(test) / t_gen:,.0f} users/s)")
    for n in [*names, "union"]:
        per_user = sizes.get(n, cands.height / len(test))
        print(f"  {n:10s} candidate recall {recall[n]:.4f}   {per_user:6.1f} candidates/user")


if __name__ == "__main__":
    main()
