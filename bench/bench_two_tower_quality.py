"""Two-tower retrieval quality on a data set with the generator's ground truth.

Prints validation recall@K (full corpus, exact search, seen items excluded) of the trained
model beside the popularity baseline and the oracle that ranks by the hidden true utility, all
on the same held-out users; then cold start: 10% of the products hidden from training, scored by
their content-only vectors for the users who went on to interact with them, against a random
ranking of the same items.

    python bench/bench_two_tower_quality.py --config data_samples/config.toml
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import polars as pl
import torch

from embeddings.config import EmbeddingsConfig
from embeddings.encode import all_vectors
from embeddings.model import TwoTower
from embeddings.retrieval_eval import (
    HeldOut,
    held_out,
    hide_items,
    popularity_scores,
    random_scores,
    recall_at_k,
    vector_scores,
)
from embeddings.train import TrainResult, train_two_tower
from engine.config import EngineConfig
from pipelines.config import load_config
from pipelines.dataset import FeatureSet, build_features
from pipelines.synthetic import GroundTruth

KS = (10, 50)


def oracle_scores(fs: FeatureSet, ho: HeldOut, gt: GroundTruth):
    """Scores by the true utility in the middle of the validation window."""

    def rows(vocab_values: pl.Series, truth_ids: pl.Series, size: int) -> np.ndarray:
        lookup = dict(zip(truth_ids.to_list(), range(len(truth_ids)), strict=True))
        out = np.zeros(size, np.int64)
        out[1:] = [lookup[v] for v in vocab_values.to_list()]
        return out

    umap = rows(fs.vocabs.user.values, gt.user_ids, fs.vocabs.user.size)
    imap = rows(fs.vocabs.item.values, gt.item_ids, fs.vocabs.item.size)
    at = fs.valid_start + (fs.test_start - fs.valid_start) / 2
    return lambda r: torch.from_numpy(gt.utility(umap[ho.users[r]], at)[:, imap].astype(np.float32))


def vectors(
    result: TrainResult, cfg: EmbeddingsConfig, fs: FeatureSet, users: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    model = TwoTower(result.sizes, cfg.model)
    model.load_state_dict(result.state_dict)
    model.eval()
    v = all_vectors(
        model,
        fs,
        known_items=result.known_items,
        known_users=result.known_users,
        history_length=cfg.features.history_length,
    )
    return torch.from_numpy(v.users[users]), torch.from_numpy(v.items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="data_samples/config.toml")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.config, EngineConfig)
    fs = build_features(cfg)
    ho = held_out(fs).subset(cfg.train.eval_users, seed=cfg.train.seed)

    t0 = time.perf_counter()
    result = train_two_tower(fs, cfg, validation=held_out(fs))
    seconds = time.perf_counter() - t0
    uv, iv = vectors(result, cfg, fs, ho.users)
    rows = {"two-tower": vector_scores(uv, iv), "popularity": popularity_scores(fs)}
    if cfg.data.ground_truth is not None:
        rows["oracle (true utility)"] = oracle_scores(
            fs, ho, GroundTruth.load(cfg.data.ground_truth)
        )
    print(
        f"warm: {len(ho):,} validation users, {int(ho.corpus.sum()):,} products; two-tower "
        f"trained {len(result.epochs)} epochs in {seconds:.0f} s, best epoch {result.best_epoch + 1}"
    )
    for name, fn in rows.items():
        print(f"  {name:24s} " + "  ".join(f"recall@{k} {recall_at_k(fn, ho, k):.4f}" for k in KS))

    products = fs.items.filter(pl.col("kind") == "product")["item_idx"].to_numpy()
    hidden = np.random.default_rng(0).choice(products, len(products) // 10, replace=False)
    cold_fs = hide_items(fs, hidden)
    cold_result = train_two_tower(cold_fs, cfg, validation=held_out(cold_fs))
    corpus = np.zeros(cold_result.sizes.item, bool)
    corpus[hidden] = True
    cold = held_out(cold_fs).restrict(corpus)
    uv, iv = vectors(cold_result, cfg, cold_fs, cold.users)
    print(
        f"cold: {len(hidden):,} products hidden from training, {len(cold):,} users with "
        f"held-out positives on them, ranked among the hidden products"
    )
    for k in KS:
        got = recall_at_k(vector_scores(uv, iv), cold, k)
        chance = float(
            np.mean([recall_at_k(random_scores(len(corpus), seed=s), cold, k) for s in range(20)])
        )
        print(f"  recall@{k}: content-only {got:.4f}, random {chance:.4f} ({got / chance:.1f}x)")


if __name__ == "__main__":
    main()
