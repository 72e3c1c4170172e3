"""Re-ranking quality: NDCG@10 of the LightGBM LambdaRank order against the two-tower order
(and popularity) on the same candidate lists of the test window.

The ranker learns on candidates generated as of the validation start, labelled with what users
did in the validation window (graded: purchase > add_to_cart > click > view); it is scored on
candidates generated as of the test start, labelled with the test window. Lists with no
positive are left out of both (no order can score there).

    python bench/bench_rerank_quality.py --config data_samples/config.toml
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
import polars as pl

from engine.candidates import default_sources, generate_candidates
from engine.config import EngineConfig
from engine.rerank.dataset import attach_labels, rank_data, split_users
from engine.rerank.features import feature_frame, feature_names, labels
from engine.rerank.ndcg import mean_ndcg
from engine.rerank.ranker import train_ranker
from engine.retrieval import retrieval_context, train_retrieval
from pipelines.config import load_config
from pipelines.dataset import build_features


def labelled_candidates(cfg: EngineConfig, window: str, label_split: str, trained
                        ) -> pl.DataFrame:
    fs = build_features(cfg, window=window)  # type: ignore[arg-type]
    ctx, _ = retrieval_context(cfg, fs, trained)
    users = (fs.interactions.filter(pl.col("split") == label_split)["user_idx"].unique()
             .sort().to_numpy().astype(np.int64))
    cands = generate_candidates(default_sources(ctx), users)
    return attach_labels(feature_frame(cands, ctx), labels(ctx, label_split))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="data_samples/config.toml")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.config, EngineConfig)
    t0 = time.perf_counter()
    trained = train_retrieval(cfg)
    train = labelled_candidates(cfg, "train", "valid", trained)
    # the test window is scored by a refit on train + valid with the early-stopped epoch count,
    # as a published model would be
    refit = train_retrieval(cfg, window="valid", epochs=trained.result.best_epoch + 1)
    test = labelled_candidates(cfg, "valid", "test", refit)
    names = feature_names(train)
    fit, hold = split_users(train, 0.2, seed=0)
    rcfg = cfg.rerank
    booster = train_ranker(rank_data(fit, names), names, rcfg, valid=rank_data(hold, names))
    seconds = time.perf_counter() - t0
    data = rank_data(test, names)
    orders = {
        "LightGBM re-ranker": booster.predict(data.x, num_iteration=booster.best_iteration),
        "two-tower dot product": test["two_tower"].to_numpy(),
        "popularity (count_all)": test["count_all"].to_numpy().astype(float),
        "co-visitation score": test["covisit_score"].fill_null(-1).to_numpy(),
    }
    print(f"train lists {train['user_idx'].n_unique():,} ({train.height:,} rows), test lists "
          f"{test['user_idx'].n_unique():,} ({test.height:,} rows), {len(names)} features; "
          f"{booster.best_iteration} trees; whole run {seconds:.0f} s")
    for name, scores in orders.items():
        print(f"  {name:24s} NDCG@10 {mean_ndcg(data.y, scores, data.group, 10):.4f}  "
              f"NDCG@50 {mean_ndcg(data.y, scores, data.group, 50):.4f}")
    gain = dict(zip(names, booster.feature_importance("gain"), strict=True))
    top = sorted(gain.items(), key=lambda p: -p[1])[:8]
    print("  top features by gain: " + json.dumps({k: round(v) for k, v in top}))


if __name__ == "__main__":
    main()
