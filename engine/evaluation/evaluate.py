"""The offline evaluation: every model refitted on the train and validation windows, each
stage and each baseline scored on the test window by the same metric code.

Protocol. The two-tower model is refitted on train + valid (the epoch count early stopping
chose on the validation window); the re-ranker learns from training lists whose labels all lie
before the test start; the baselines are fitted on the same train + valid positives. Each
method ranks the full corpus of eligible products for every user with a new (unseen) positive
in the test window; the user's seen items are excluded from every list and from the truth. On
generated data the generator's true utility ranks the same items: the oracle.

Stages, so a loss can be traced to where it happens: the candidate set (recall only), the
two-tower order over the whole corpus, the re-ranked candidates, and the final list after the
business rules (recengine's product list).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from engine.candidates import CandidateContext
from engine.config import EngineConfig
from engine.evaluation.ads import ads_evaluation
from engine.evaluation.baselines import GRIDS, default_params, make_baseline, top_items
from engine.evaluation.beyond import beyond_accuracy
from engine.evaluation.config import EvaluationConfig
from engine.evaluation.document import (
    BaselineChoice,
    CandidateFigures,
    Evaluation,
    MethodFigures,
    Paired,
    Significance,
    Verdict,
)
from engine.evaluation.holdout import Holdout, holdout, segments
from engine.evaluation.metrics import RANKING, gains_of, means, ranking_metrics
from engine.evaluation.stage_lists import Oracle, recengine_lists, two_tower_lists
from engine.rerank.features import GRADES
from engine.rerank.ndcg import paired_bootstrap
from engine.rerank.training import FittedRanker, fit_ranker, list_mode, training_lists
from engine.retrieval import retrieval_context, train_retrieval
from pipelines.dataset import FeatureSet, build_features
from pipelines.errors import DataError
from pipelines.progress import Report, silent
from pipelines.validate import validate_tables

STAGE_OF = {
    "two_tower": "retrieval",
    "reranked": "re-rank",
    "final": "final list",
    "popularity": "baseline",
    "item_knn": "baseline",
    "ease": "baseline",
    "als": "baseline",
    "oracle_candidates": "oracle",
    "oracle": "oracle",
}
LABELS = {
    "two_tower": "two-tower (full corpus)",
    "reranked": "re-ranked candidates",
    "final": "recengine final list",
    "popularity": "popularity",
    "item_knn": "item-kNN",
    "ease": "EASE",
    "als": "ALS (implicit)",
    "oracle_candidates": "oracle order of the candidates",
    "oracle": "oracle (true utility)",
}
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)
EVALUATION_KEYS = (
    "protocol",
    "metric_names",
    "candidates",
    "methods",
    "significance",
    "verdict",
    "ads",
    "seconds",
    "beyond_k",
)
"""The keys of `evaluate`'s document (an incremental run carries them over from its base)."""


@dataclass
class Timer:
    """Seconds per step, in order: `with timer("step"): ...`."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 2)


def tune_baselines(cfg: EngineConfig, fs: FeatureSet, report: Report) -> dict[str, BaselineChoice]:
    """Each baseline's parameters, chosen by NDCG@k on the validation window with models fitted
    on the train window (`fs`; a sample of `tune_users` users), and the score of every
    setting."""
    ec = cfg.evaluation
    k0 = ec.ks[0]
    fit_ec = ec.model_copy(update={"ease_max_items": min(ec.ease_max_items, ec.tune_ease_items)})
    h = holdout(CandidateContext.build(fs, cfg.candidates), split="valid")
    rows = np.arange(len(h.truth.users))
    if len(rows) > ec.tune_users:
        rows = np.sort(np.random.default_rng(ec.seed).choice(rows, ec.tune_users, replace=False))
    truth = h.truth.subset(rows)
    out: dict[str, BaselineChoice] = {}
    for name in ec.baselines:
        grid = GRIDS[name] if ec.tune_baselines else [default_params(name, ec)]
        tried = []
        for params in grid:
            report(f"evaluation: tune {name} {params}")
            top = top_items(
                make_baseline(name, h.fit, h.recent, params, fit_ec),
                truth.users,
                h.seen,
                h.eligible,
                k0,
            )
            tried.append((params, float(ranking_metrics(top, truth, [k0])[f"ndcg@{k0}"].mean())))
        best = max(tried, key=lambda t: t[1])
        out[name] = {
            "params": best[0],
            "valid_ndcg": best[1],
            "tried": [{"params": p, f"valid_ndcg@{k0}": v} for p, v in tried],
        }
    return out


def paired(a: np.ndarray, b: np.ndarray, draws: int, seed: int) -> Paired:
    """Mean per-user difference a - b, its bootstrap interval and a paired t-test p-value."""
    mean, lo, hi = paired_bootstrap(a, b, draws=draws, seed=seed)
    diff = a - b
    p = 1.0 if np.allclose(diff, 0) else float(stats.ttest_rel(a, b).pvalue)
    return {"diff": mean, "ci_low": lo, "ci_high": hi, "p_value": p}


def method_figures(
    tops: dict[str, np.ndarray],
    per_user: dict[str, dict[str, np.ndarray]],
    h: Holdout,
    ec: EvaluationConfig,
) -> dict[str, MethodFigures]:
    """Each method's mean metrics, curves, beyond-accuracy figures, segments, cold-item recall
    and (with an oracle) share of the oracle's value. `per_user` holds every metric at every
    cut-off of `ec.ks` and CURVE_KS."""
    truth, k0 = h.truth, ec.ks[0]
    segs = segments(h, ec.activity_bins)
    cold_truth = truth.only_items(h.counts == 0)
    cold_rows = np.searchsorted(truth.users, cold_truth.users)
    category = _category(h.fs)

    def seg(name: str, rows: np.ndarray) -> dict[str, int | float | None]:
        out: dict[str, int | float | None] = {"users": len(rows)}
        for metric in (f"ndcg@{k0}", f"recall@{k0}"):
            out[metric] = float(per_user[name][metric][rows].mean()) if len(rows) else None
        return out

    methods: dict[str, MethodFigures] = {}
    for name, top in tops.items():
        curve = per_user[name]
        cold = ranking_metrics(top[cold_rows], cold_truth, ec.ks) if len(cold_rows) else {}
        methods[name] = {
            "label": LABELS.get(name, name),
            "stage": STAGE_OF.get(name, "baseline"),
            "metrics": means({f"{m}@{k}": curve[f"{m}@{k}"] for k in ec.ks for m in RANKING}),
            "curve": {
                metric: {str(k): float(curve[f"{metric}@{k}"].mean()) for k in CURVE_KS}
                for metric in ("ndcg", "recall")
            },
            "beyond": beyond_accuracy(
                top[:, : ec.beyond_k],
                counts=h.counts,
                category=category,
                eligible=h.eligible,
                n_users=h.fs.vocabs.user.size,
            ),
            "segments": {s: seg(name, rows) for s, rows in segs.items()},
            "cold_items": {
                f"recall@{k}": float(cold[f"recall@{k}"].mean()) if cold else None for k in ec.ks
            },
        }
    if "oracle" in methods:
        best = methods["oracle"]["metrics"]
        for v in methods.values():
            v["oracle_share"] = {
                k: (x / best[k] if best[k] else None) for k, x in v["metrics"].items()
            }
    return methods


def verdict_of(
    methods: Mapping[str, MethodFigures],
    significance: Mapping[str, Paired],
    key: str,
    *,
    users: int | None = None,
    min_users: int = 0,
) -> Verdict:
    """The final list against the best baseline on `key`, plainly; shares of the oracle.
    With fewer than `min_users` evaluated users it names no winner (`decided` False)."""
    baselines = [n for n in methods if STAGE_OF.get(n) == "baseline"]
    final_v = methods["final"]["metrics"][key]
    verdict: Verdict = {"metric": key, "final": final_v}
    if users is not None and users < min_users:
        verdict |= {
            "decided": False,
            "users": users,
            "min_users": min_users,
            "reason": f"the test set holds {users:,} users, fewer than [evaluation] "
            f"min_users = {min_users:,}: these figures cannot decide "
            "between the methods",
        }
    if baselines:
        best_name = max(baselines, key=lambda n: methods[n]["metrics"][key])
        best_v = methods[best_name]["metrics"][key]
        verdict |= {
            "best_baseline": best_name,
            "best_baseline_value": best_v,
            "final_minus_best": final_v - best_v,
            "p_value": significance[best_name]["p_value"],
            "beats_best_baseline": bool(final_v >= best_v),
        }
    if "oracle" in methods:
        verdict["oracle_share"] = methods["final"]["oracle_share"][key]
        verdict["oracle_candidates_share"] = methods["oracle_candidates"]["oracle_share"][key]
    return verdict


def evaluate(
    cfg: EngineConfig,
    *,
    epochs: int | None = None,
    report: Report = silent,
    ranker: FittedRanker | None = None,
    lists: int = 0,
) -> Evaluation:
    """Every figure of the evaluation report (see the module doc), JSON-ready. `ranker`
    (fitted on `lists` training lists that never saw the test rows: the nightly's, when its
    lists were cut per user without them) is scored as it is instead of being refitted."""
    ec = cfg.evaluation
    kmax, k0 = max(max(ec.ks), max(CURVE_KS)), ec.ks[0]
    timer = Timer()
    tables = validate_tables(cfg.data, cfg.columns)
    fs_train = build_features(cfg, window="train", tables=tables)
    fs = build_features(cfg, window="valid", tables=tables)
    if epochs is None:
        report("evaluation: choose the two-tower epochs on the validation window")
        with timer("two-tower early stopping"):
            epochs = train_retrieval(cfg).result.best_epoch + 1
    report("evaluation: two-tower refit on train + valid")
    with timer("two-tower refit"):
        refit = train_retrieval(cfg, window="valid", epochs=epochs)
    if ranker is None:
        report("evaluation: re-ranker on lists labelled before the test start")
        with timer("re-ranker training lists"):
            frame = training_lists(
                cfg, fs_train.as_of, epochs=epochs, report=report, exclude_test=True, tables=tables
            )
        with timer("re-ranker fit"):
            ranker = fit_ranker(frame, cfg)
        lists = ranker.lists
    ctx, _ = retrieval_context(cfg, fs, refit)
    h = holdout(ctx)
    test_users = len(h.truth.users)
    if ec.max_users is not None and len(h.truth.users) > ec.max_users:
        rows = np.sort(
            np.random.default_rng(ec.seed).choice(len(h.truth.users), ec.max_users, replace=False)
        )
        h = dataclasses.replace(h, truth=h.truth.subset(rows))
    truth = h.truth
    if len(truth.users) == 0:
        raise DataError(
            cfg.data.interactions,
            "the test window has no user with a new "
            "positive on an eligible product: nothing to evaluate",
        )

    tops: dict[str, np.ndarray] = {}
    with timer("recengine lists"):
        made = recengine_lists(ctx, ranker, h, cfg, kmax, report)
    with timer("two-tower lists"):
        tops["two_tower"] = two_tower_lists(ctx, h, kmax)
    tops["reranked"], tops["final"] = made.reranked, made.final
    with timer("baseline tuning"):
        tuned = tune_baselines(cfg, fs_train, report)
    for name, choice in tuned.items():
        report(f"evaluation: baseline {name}")
        with timer(f"baseline {name}"):
            scorer = make_baseline(name, h.fit, h.recent, choice["params"], ec)
            tops[name] = top_items(scorer, truth.users, h.seen, h.eligible, kmax)
    oracle = Oracle.of(cfg, fs)
    if oracle is not None:
        with timer("oracle lists"):
            tops["oracle_candidates"] = oracle.order_of(h, made.pairs, kmax)
            tops["oracle"] = oracle.lists(h, kmax)

    report("evaluation: metrics")
    all_ks = sorted(set(ec.ks) | set(CURVE_KS))
    per_user = {n: ranking_metrics(t, truth, all_ks) for n, t in tops.items()}
    methods = method_figures(tops, per_user, h, ec)
    key = f"ndcg@{k0}"
    significance: dict[str, Significance] = {
        name: {
            "metric": key,
            **paired(per_user["final"][key], per_user[name][key], ec.bootstrap_draws, ec.seed),
        }
        for name in tops
        if name != "final" and STAGE_OF.get(name) != "oracle"
    }
    verdict = verdict_of(methods, significance, key, users=len(truth.users), min_users=ec.min_users)

    hits_c = gains_of(made.candidates, truth) > 0
    candidates: CandidateFigures = {
        "recall": float((hits_c.sum(1) / truth.n_relevant).mean()),
        "mean_size": float((made.candidates >= 0).sum(1).mean()),
        "items_found": int(hits_c.sum()),
        "relevant_items": int(truth.n_relevant.sum()),
    }
    report("evaluation: ads")
    with timer("ads"):
        ads = ads_evaluation(
            cfg, tables, fs_train, fs, oracle.truth if oracle is not None else None
        )
    return {
        "protocol": {
            "fit": "train + valid windows",
            "scored": "test window",
            "split": cfg.split.strategy,
            "list_mode": list_mode(cfg, tables, fs_train.as_of),
            "test_start": str(fs.test_start),
            "users": len(truth.users),
            "test_users": int(test_users),
            "relevant_items": int(truth.n_relevant.sum()),
            "eligible_items": int(h.eligible.sum()),
            "ks": ec.ks,
            "epochs": epochs,
            "ranker_trees": ranker.trees,
            "ranker_fallback": ranker.fallback,
            "ranker_tried": ranker.tried_text,
            "ranker_holdout_ndcg": ranker.holdout_ndcg,
            "ranker_num_leaves": ranker.num_leaves,
            "ranker_orders": ranker.orders,
            "training_lists": int(lists),
            "gain": "2^grade - 1 (" + ", ".join(f"{e} {g}" for e, g in GRADES.items()) + ")",
            "cold_items": int(((h.counts == 0) & h.eligible).sum()),
            "baselines": tuned,
        },
        "metric_names": list(RANKING),
        "candidates": candidates,
        "methods": methods,
        "significance": significance,
        "verdict": verdict,
        "ads": ads,
        "seconds": timer.seconds,
        "beyond_k": ec.beyond_k,
    }


def _category(fs: FeatureSet) -> np.ndarray:
    out = np.full(fs.vocabs.item.size, -1, np.int64)
    items = fs.items.select("item_idx", pl.col("leaf_category").cast(pl.Int64).fill_null(-1))
    out[items["item_idx"].to_numpy()] = items["leaf_category"].to_numpy()
    return out
