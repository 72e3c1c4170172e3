"""Scoring the lists with an early exit (`[rerank] early_exit_trees` / `early_exit_keep`) against
the whole model on every candidate, on a built version: the re-ranker's time per user and how
far the final lists (rules applied, k from the version's config) move from the exact ones.

    python bench/bench_early_exit.py --version VERSION_DIR [--users 2000]
        [--trees 30,60,100] [--keep 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from harness import Report, timed

from engine.candidates import default_sources, generate_candidates
from engine.rerank.features import feature_frame
from engine.rerank.lists import product_lists
from engine.rerank.ranker import EarlyExit, score_frame
from engine.version import full_context
from serving.state import VersionState


def by_user(lists: pl.DataFrame) -> dict[int, list[int]]:
    return {int(u): d.sort("rank")["item_idx"].to_list() for (u,), d in lists.group_by("user_idx")}


def agreement(
    exact: dict[int, list[int]], other: dict[int, list[int]], k: int
) -> tuple[float, float]:
    """(share of users whose list is identical, mean share of the exact top k kept)."""
    same = [exact[u] == other.get(u) for u in exact]
    kept = [
        len(set(exact[u][:k]) & set(other.get(u, [])[:k])) / max(len(exact[u][:k]), 1)
        for u in exact
    ]
    return float(np.mean(same)), float(np.mean(kept))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--version", type=Path, required=True, help="a version (or staging) folder")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--trees", default="30,60,100")
    ap.add_argument("--keep", default="100")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    state = VersionState.load(args.version.resolve())  # what the online path loads
    cfg, booster, names, facts = state.cfg, state.booster, state.names, state.facts
    ctx = full_context(state.folder, state.cfg.candidates)  # the frames read every table
    users = ctx.fs.users["user_idx"].to_numpy().astype(np.int64)
    users = np.sort(np.random.default_rng(0).choice(users[users > 0], args.users, replace=False))
    frame = feature_frame(generate_candidates(default_sources(ctx), users), ctx)
    k = cfg.jobs.k
    report = Report("early_exit", args)
    where = (
        f"{args.users:,} users, {frame.height / args.users:.0f} candidates each, "
        f"{booster.current_iteration()} trees, k = {k}"
    )

    def lists(early_exit: EarlyExit | None) -> tuple[list[float], dict[int, list[int]]]:
        secs = timed(lambda: score_frame(booster, frame, names, early_exit), args.repeats, warmup=0)
        scores = score_frame(booster, frame, names, early_exit)
        made = product_lists(frame, scores, facts, k=k, rules=cfg.rules)
        return [s / args.users * 1e3 for s in secs], by_user(made)

    whole_ms, exact = lists(None)
    report.add(f"re-ranker, every candidate through every tree ({where})", whole_ms, "ms/user")
    for keep in (int(v) for v in args.keep.split(",")):
        for trees in (int(v) for v in args.trees.split(",")):
            ms, made = lists(EarlyExit(trees, keep))
            same, kept = agreement(exact, made, k)
            tag = f"early exit after {trees} trees, best {keep} go on"
            report.add(
                tag,
                ms,
                "ms/user",
                ratio=("faster", statistics.median(whole_ms) / statistics.median(ms)),
            )
            report.add(f"{tag}: lists identical to the exact ones", same, "")
            report.add(f"{tag}: exact top {k} items kept", kept, "")
    report.finish()


if __name__ == "__main__":
    main()
