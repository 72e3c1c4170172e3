"""Re-ranking quality: NDCG@10 of the LightGBM re-ranker against the two-tower order (and
popularity, co-visitation and the generator's true utility) on the same candidate lists of
the test window, with a paired bootstrap interval of the difference; then the final lists
(rules and explanations) and the ad lists those models give.

The ranker learns on lists made at `[rerank] training_cutoffs` weekly cutoffs before the
validation end, each with a two-tower model trained only on what came before it; the test
lists are made as of the test start by a two-tower model refitted on train + valid, labelled
with the test window (graded: purchase > add_to_cart > click > view). Lists with no positive
are left out (no order can score there).

    python bench/bench_rerank_quality.py --config data_samples/config.toml [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from engine.config import EngineConfig
from engine.index.eligibility import eligible_items
from engine.rerank.dataset import rank_data
from engine.rerank.lists import ItemFacts, product_lists, with_explanations
from engine.rerank.ndcg import ndcg_per_query, paired_bootstrap
from engine.rerank.training import fit_ranker, labelled_lists, training_lists
from engine.retrieval import train_retrieval
from pipelines.config import load_config
from pipelines.dataset import build_features
from pipelines.synthetic import GroundTruth


def list_ndcg(lists: pl.DataFrame, test: pl.DataFrame, k: int = 10) -> float:
    """NDCG@k of final lists (rank order) against every label of the user's candidate list."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    got = (
        lists.join(test.select("user_idx", "item_idx", "label"), on=["user_idx", "item_idx"])
        .group_by("user_idx")
        .agg(pl.col("label").sort_by("rank"))
    )
    ideal = test.group_by("user_idx").agg(pl.col("label").sort(descending=True).head(k))
    both = got.join(ideal, on="user_idx", suffix="_ideal")
    out = []
    for have, want in zip(both["label"].to_list(), both["label_ideal"].to_list(), strict=True):
        dcg = sum((2.0**r - 1) * disc[i] for i, r in enumerate(have[:k]))
        idcg = sum((2.0**r - 1) * disc[i] for i, r in enumerate(want))
        out.append(dcg / idcg if idcg > 0 else 1.0)
    return float(np.mean(out))


def final_lists(
    cfg: EngineConfig, test: pl.DataFrame, scores: np.ndarray, best, data
) -> dict[str, object]:
    """Top 10 under the rules (none, then a brand cap of 2), with explanations: their NDCG@10
    and the time they take."""
    fs = build_features(cfg, window="valid")
    facts = ItemFacts.build(
        fs, eligible_items(fs.items, fs.vocabs.item.size, at=fs.as_of, kind="product")
    )
    out: dict[str, object] = {}
    for label, rules in (
        ("rules as configured", cfg.rules),
        ("brand cap 2", cfg.rules.model_copy(update={"max_per_brand": 2})),
    ):
        t = time.perf_counter()
        lists = product_lists(test, scores, facts, k=10, rules=rules)
        t_rules = time.perf_counter() - t
        t = time.perf_counter()
        lists = with_explanations(lists, test, best.ranker, best.names)
        t_why = time.perf_counter() - t
        per_brand = (
            lists.group_by(
                "user_idx",
                pl.col("item_idx").map_elements(
                    lambda i: int(facts.brand[i]), return_dtype=pl.Int64
                ),
            )
            .len()["len"]
            .max()
        )
        ndcg = list_ndcg(lists, test)
        out[label] = {
            "ndcg@10": ndcg,
            "rules_s": t_rules,
            "explain_s": t_why,
            "most_per_brand": per_brand,
        }
        print(
            f"  final top 10, {label}: NDCG@10 {ndcg:.4f}, most items of one brand "
            f"{per_brand}; rules {t_rules:.1f} s, explanations {t_why:.1f} s for "
            f"{lists['user_idx'].n_unique():,} users"
        )
    print(f"  e.g. {lists.row(0, named=True)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="data_samples/config.toml")
    ap.add_argument("--out", default="artifacts/reports/rerank_quality.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = load_config(args.config, EngineConfig)
    t0 = time.perf_counter()
    trained = train_retrieval(cfg)
    epochs = trained.result.best_epoch + 1
    valid_start = build_features(cfg, window="train").as_of  # the early-stopped run picks epochs
    lists = training_lists(cfg, valid_start, epochs=epochs)
    t_lists = time.perf_counter() - t0
    fitted = {
        obj: fit_ranker(
            lists,
            cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"objective": obj})}),
        )
        for obj in dict.fromkeys([cfg.rerank.objective, "rank_xendcg", "lambdarank"])
    }
    refit = train_retrieval(cfg, window="valid", epochs=epochs)
    test = labelled_lists(cfg, refit, window="valid", label_split="test")
    seconds = time.perf_counter() - t0
    names = next(iter(fitted.values())).names
    data = rank_data(test, names)

    orders = {
        f"LightGBM {obj}": f.ranker.predict(data.x, num_iteration=f.ranker.best_iteration)
        for obj, f in fitted.items()
    }
    orders |= {
        "two-tower dot product": test["two_tower"].to_numpy(),
        "popularity (count_all)": test["count_all"].to_numpy().astype(float),
        "co-visitation score": test["covisit_score"].fill_null(-1).to_numpy(),
    }
    if cfg.data.ground_truth is not None:
        gt = GroundTruth.load(cfg.data.ground_truth)
        vocab = build_features(cfg, window="valid")
        at = vocab.test_start + timedelta(days=cfg.split.test_days or 7) / 2
        orders["oracle (true utility)"] = gt.pair_utility(
            vocab.vocabs.user.decode(test["user_idx"]),
            vocab.vocabs.item.decode(test["item_idx"]),
            at,
        )
    per = {
        n: {k: ndcg_per_query(data.y, s, data.group, k) for k in (10, 50)}
        for n, s in orders.items()
    }
    base = per["two-tower dot product"][10]
    report: dict[str, object] = {
        "config": str(args.config),
        "train_lists": int(lists.select("cutoff", "user_idx").n_unique()),
        "train_rows": lists.height,
        "cutoffs": cfg.rerank.training_cutoffs,
        "test_lists": len(data.group),
        "test_rows": test.height,
        "features": len(names),
        "seconds": round(seconds, 1),
        "orders": {},
    }
    print(
        f"train lists {report['train_lists']:,} ({lists.height:,} rows, "
        f"{cfg.rerank.training_cutoffs} cutoffs, built in {t_lists:.0f} s), test lists "
        f"{len(data.group):,} ({test.height:,} rows), {len(names)} features; whole run "
        f"{seconds:.0f} s"
    )
    for name, by_k in per.items():
        mean, lo, hi = paired_bootstrap(by_k[10], base)
        row = {
            "ndcg@10": by_k[10].mean(),
            "ndcg@50": by_k[50].mean(),
            "vs_two_tower@10": [mean, lo, hi],
        }
        report["orders"][name] = row  # type: ignore[index]
        vs = (
            ""
            if name.startswith("two-tower")
            else f"  vs two-tower {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        )
        print(f"  {name:26s} NDCG@10 {row['ndcg@10']:.4f}  NDCG@50 {row['ndcg@50']:.4f}{vs}")
    for obj, f in fitted.items():
        gain = dict(
            zip(
                f.names,
                f.ranker.feature_importance("gain", iteration=f.ranker.best_iteration),
                strict=True,
            )
        )
        top = sorted(gain.items(), key=lambda p: -p[1])[:8]
        print(
            f"  {obj}: {f.ranker.best_iteration} trees, holdout NDCG@10 {f.holdout_ndcg:.4f} "
            f"(two-tower {f.holdout_two_tower_ndcg:.4f}); top gain "
            + json.dumps({k: round(v) for k, v in top})
        )
    best = fitted[cfg.rerank.objective]
    scores = best.ranker.predict(data.x, num_iteration=best.ranker.best_iteration)
    report["final_lists"] = final_lists(cfg, test, scores, best, data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"  written {out}")


if __name__ == "__main__":
    main()
