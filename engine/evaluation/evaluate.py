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

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from engine.candidates import CandidateContext, default_sources, generate_candidates
from engine.config import EngineConfig
from engine.evaluation.ads import ads_evaluation
from engine.evaluation.baselines import (
    GRIDS, SCORES_PER_CHUNK, Interactions, default_params, make_baseline, top_items,
    top_of_scores,
)
from engine.evaluation.beyond import beyond_accuracy
from engine.evaluation.config import EvaluationConfig
from engine.evaluation.metrics import RANKING, Truth, gains_of, means, ranking_metrics
from engine.rerank.features import feature_frame, labels
from engine.rerank.lists import ItemFacts, product_lists
from engine.rerank.ndcg import paired_bootstrap
from engine.rerank.ranker import score_frame
from engine.rerank.training import FittedRanker, fit_ranker, training_lists
from engine.retrieval import retrieval_context, train_retrieval
from pipelines.dataset import FeatureSet, build_features
from pipelines.errors import DataError
from pipelines.progress import Report, silent
from pipelines.synthetic import GroundTruth

STAGE_OF = {"two_tower": "retrieval", "reranked": "re-rank", "final": "final list",
            "popularity": "baseline", "item_knn": "baseline", "ease": "baseline",
            "als": "baseline", "oracle_candidates": "oracle", "oracle": "oracle"}
LABELS = {"two_tower": "two-tower (full corpus)", "reranked": "re-ranked candidates",
          "final": "recengine final list", "popularity": "popularity", "item_knn": "item-kNN",
          "ease": "EASE", "als": "ALS (implicit)",
          "oracle_candidates": "oracle order of the candidates", "oracle": "oracle (true utility)"}
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)


@dataclass
class Timer:
    """Seconds per step, in order: `with timer("step"): ...`."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 2)


@dataclass(frozen=True)
class Holdout:
    """The evaluated users, their truth and what may be listed for them."""

    fs: FeatureSet
    truth: Truth
    seen: sp.csr_matrix        # (n_users, n_items) items each user may not be shown again
    eligible: np.ndarray       # (n_items,) bool: products on offer at the cut
    counts: np.ndarray         # (n_items,) users with a positive in the fit window
    fit: Interactions
    window: pl.DataFrame       # the fit window's positives (user_idx, item_idx, ts)

    def recent(self, days: float | None) -> sp.csr_matrix:
        """The fit matrix of the last `days` before the cut (None: the whole window)."""
        if days is None:
            return self.fit.matrix
        w = self.window.filter(pl.col("ts") >= self.fs.as_of - timedelta(days=days))
        return Interactions.build(w["user_idx"].to_numpy(), w["item_idx"].to_numpy(),
                                  *self.fit.matrix.shape).matrix


def holdout(ctx: CandidateContext, split: str = "test") -> Holdout:
    """Users with a new positive in `split` after the context's feature window, whose truth is
    those positives (eligible products they had not seen)."""
    fs = ctx.fs
    n_users, n_items = fs.vocabs.user.size, fs.vocabs.item.size
    seen = ctx.seen.select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
    seen_m = sp.csr_matrix((np.ones(seen.height, np.float32),
                            (seen["user_idx"].to_numpy(), seen["item_idx"].to_numpy())),
                           shape=(n_users, n_items))
    test = (labels(ctx, split).join(seen, on=["user_idx", "item_idx"], how="anti")
            .filter(pl.col("item_idx").is_in(np.flatnonzero(ctx.eligible).tolist())))
    win = fs.window_interactions().select("user_idx", "item_idx", "ts")
    fit = Interactions.build(win["user_idx"].to_numpy(), win["item_idx"].to_numpy(),
                             n_users, n_items)
    counts = np.asarray(fit.matrix.sum(axis=0)).ravel()
    return Holdout(fs, Truth.from_frame(test), seen_m, ctx.eligible, counts, fit, win)


def tune_baselines(cfg: EngineConfig, report: Report) -> dict[str, dict[str, object]]:
    """Each baseline's parameters, chosen by NDCG@k on the validation window with models fitted
    on the train window (a sample of `tune_users` users), and the score of every setting."""
    ec = cfg.evaluation
    k0 = ec.ks[0]
    fs = build_features(cfg, window="train")
    h = holdout(CandidateContext.build(fs, cfg.candidates), split="valid")
    rows = np.arange(len(h.truth.users))
    if len(rows) > ec.tune_users:
        rows = np.sort(np.random.default_rng(ec.seed).choice(rows, ec.tune_users, replace=False))
    truth = h.truth.subset(rows)
    out: dict[str, dict[str, object]] = {}
    for name in ec.baselines:
        grid = GRIDS[name] if ec.tune_baselines else [default_params(name, ec)]
        tried = []
        for params in grid:
            report(f"evaluation: tune {name} {params}")
            top = top_items(make_baseline(name, h.fit, h.recent, params, ec), truth.users,
                            h.seen, h.eligible, k0)
            tried.append((params, float(ranking_metrics(top, truth, [k0])[f"ndcg@{k0}"].mean())))
        best = max(tried, key=lambda t: t[1])
        out[name] = {"params": best[0], "valid_ndcg": best[1],
                     "tried": [{"params": p, f"valid_ndcg@{k0}": v} for p, v in tried]}
    return out


@dataclass(frozen=True)
class StageLists:
    """recengine's lists at each stage, as (U, ·) item matrices aligned with the truth."""

    candidates: np.ndarray   # the candidate set (ordered by the re-ranker), every item
    pairs: pl.DataFrame      # user_idx, item_idx, score of every unseen candidate
    reranked: np.ndarray     # the candidates by re-ranker score, top kmax
    final: np.ndarray        # the final list after the business rules, top kmax


def recengine_lists(ctx: CandidateContext, ranker: FittedRanker, h: Holdout, cfg: EngineConfig,
                    kmax: int, report: Report) -> StageLists:
    """The candidate set, the re-ranked candidates and the final lists, in chunks of users;
    seen items are scored with their list (the features see the whole list, as in
    production) and then left out."""
    users = h.truth.users
    sources = default_sources(ctx)
    facts = ItemFacts.build(ctx.fs, ctx.eligible, ctx.item_vectors)
    cands, reranked, final = [], [], []
    width = 0
    for a in range(0, len(users), cfg.jobs.user_chunk):
        chunk = users[a:a + cfg.jobs.user_chunk]
        report(f"recengine lists {a + len(chunk):,}/{len(users):,} users")
        frame = feature_frame(generate_candidates(sources, chunk), ctx)
        scores = score_frame(ranker.booster, frame, ranker.names)
        keep = _unseen(frame, ctx.seen)
        kept = frame.filter(pl.Series(keep)).select("user_idx", "item_idx").with_columns(
            pl.Series("score", scores[keep]))
        cands.append(kept)
        width = max(width, int(kept.group_by("user_idx").len()["len"].max() or 0))
        exclude = {int(u): h.seen[int(u)].indices.tolist() for u in chunk}
        final.append(product_lists(frame, scores, facts, k=kmax, rules=cfg.rules,
                                   exclude=exclude).select("user_idx", "item_idx", "rank"))
    kept = pl.concat(cands)
    ordered = (kept.sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
               .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank")))
    return StageLists(to_matrix(ordered, users, max(width, 1)), kept,
                      to_matrix(ordered.filter(pl.col("rank") <= kmax), users, kmax),
                      to_matrix(pl.concat(final), users, kmax))


def _unseen(frame: pl.DataFrame, seen: pl.DataFrame) -> np.ndarray:
    """(N,) bool: the frame's (user_idx, item_idx) row is not among `seen`."""
    marked = seen.select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64),
                         pl.lit(True).alias("_seen"))
    return (frame.select(pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64))
            .join(marked, on=["user_idx", "item_idx"], how="left", maintain_order="left")
            ["_seen"].is_null().to_numpy())


def to_matrix(lists: pl.DataFrame, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) item_idx by rank (user_idx, item_idx, rank rows; rank from 1)."""
    out = np.full((len(users), k), -1, np.int64)
    row = np.searchsorted(users, lists["user_idx"].to_numpy())
    rank = lists["rank"].to_numpy().astype(np.int64) - 1
    ok = (row < len(users)) & (rank < k)
    ok[ok] = users[row[ok]] == lists["user_idx"].to_numpy()[ok]
    out[row[ok], rank[ok]] = lists["item_idx"].to_numpy()[ok]
    return out


def two_tower_lists(ctx: CandidateContext, h: Holdout, kmax: int) -> np.ndarray:
    """The two-tower model's full-corpus order through the served index."""
    users = h.truth.users
    out = np.full((len(users), kmax), -1, np.int64)
    for a in range(0, len(users), 4096):
        u = users[a:a + 4096]
        _, items = ctx.index.search(ctx.user_vectors[u], kmax,  # type: ignore[union-attr,index]
                                    exclude=[h.seen[int(x)].indices for x in u],
                                    allowed=h.eligible)
        out[a:a + len(u)] = items
    return out


def oracle_lists(cfg: EngineConfig, h: Holdout, kmax: int) -> np.ndarray | None:
    """The generator's true utility at the middle of the test window, same items allowed."""
    if cfg.data.ground_truth is None:
        return None
    gt = GroundTruth.load(cfg.data.ground_truth)
    fs = h.fs
    at = fs.test_start + timedelta(days=cfg.split.test_days or 7) / 2  # type: ignore[operator]
    item_ids = fs.vocabs.item.decode(pl.Series(np.arange(fs.vocabs.item.size)))
    gt_item = GroundTruth._rows(item_ids, gt.item_ids)
    gt_user = GroundTruth._rows(fs.vocabs.user.decode(pl.Series(h.truth.users)), gt.user_ids)
    out = np.full((len(h.truth.users), kmax), -1, np.int64)
    allowed = h.eligible & (gt_item >= 0)
    step = max(1, SCORES_PER_CHUNK // max(len(gt_item), 1))
    for a in range(0, len(gt_user), step):
        rows = gt_user[a:a + step]
        util = np.full((len(rows), len(gt_item)), -np.inf, np.float32)
        known = rows >= 0
        util[known] = gt.utility(rows[known], at)[:, np.maximum(gt_item, 0)]
        util[:, ~allowed] = -np.inf
        b = h.seen[h.truth.users[a:a + step]].tocoo()
        util[b.row, b.col] = -np.inf
        out[a:a + len(rows)] = top_of_scores(util, kmax)
    return out


def oracle_of_candidates(cfg: EngineConfig, h: Holdout, pairs: pl.DataFrame, kmax: int
                         ) -> np.ndarray:
    """The candidate set ordered by the true utility: the best any re-ranker could do with
    these candidates (the gap to the full oracle is what the candidate stage loses). Needs
    the generator's ground truth."""
    assert cfg.data.ground_truth is not None
    gt = GroundTruth.load(cfg.data.ground_truth)
    fs = h.fs
    at = fs.test_start + timedelta(days=cfg.split.test_days or 7) / 2  # type: ignore[operator]
    util = gt.pair_utility(fs.vocabs.user.decode(pairs["user_idx"]),
                           fs.vocabs.item.decode(pairs["item_idx"]), at)
    ordered = (pairs.with_columns(pl.Series("score", np.nan_to_num(util, nan=-np.inf)))
               .sort(["user_idx", "score", "item_idx"], descending=[False, True, False])
               .with_columns(pl.int_range(1, pl.len() + 1).over("user_idx").alias("rank"))
               .filter(pl.col("rank") <= kmax))
    return to_matrix(ordered, h.truth.users, kmax)


def segments(h: Holdout, cfg_bins: list[int]) -> dict[str, np.ndarray]:
    """Row indices (into the truth's users) of each user segment."""
    activity = np.asarray(h.fit.matrix[h.truth.users].sum(axis=1)).ravel()
    out = {"new users": np.flatnonzero(activity == 0),
           "returning users": np.flatnonzero(activity > 0)}
    edges = sorted(set(cfg_bins))
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        name = f"{lo}+ positives" if hi is None else f"{lo}-{hi - 1} positives"
        out[name] = np.flatnonzero((activity >= lo) & ((activity < hi) if hi else True))
    return out


def paired(a: np.ndarray, b: np.ndarray, draws: int, seed: int) -> dict[str, float]:
    """Mean per-user difference a - b, its bootstrap interval and a paired t-test p-value."""
    mean, lo, hi = paired_bootstrap(a, b, draws=draws, seed=seed)
    diff = a - b
    p = 1.0 if np.allclose(diff, 0) else float(stats.ttest_rel(a, b).pvalue)
    return {"diff": mean, "ci_low": lo, "ci_high": hi, "p_value": p}


def method_figures(tops: dict[str, np.ndarray], per_user: dict[str, dict[str, np.ndarray]],
                   h: Holdout, ec: EvaluationConfig) -> dict[str, dict]:
    """Each method's mean metrics, curves, beyond-accuracy figures, segments, cold-item recall
    and (with an oracle) share of the oracle's value."""
    truth, k0 = h.truth, ec.ks[0]
    segs = segments(h, ec.activity_bins)
    cold_truth = truth.only_items(h.counts == 0)
    cold_rows = np.searchsorted(truth.users, cold_truth.users)
    category = _category(h.fs)

    def seg(name: str, rows: np.ndarray) -> dict[str, object]:
        out: dict[str, object] = {"users": int(len(rows))}
        for metric in (f"ndcg@{k0}", f"recall@{k0}"):
            out[metric] = float(per_user[name][metric][rows].mean()) if len(rows) else None
        return out

    methods: dict[str, dict] = {}
    for name, top in tops.items():
        curve = ranking_metrics(top, truth, list(CURVE_KS))
        cold = ranking_metrics(top[cold_rows], cold_truth, ec.ks) if len(cold_rows) else {}
        methods[name] = {
            "label": LABELS.get(name, name), "stage": STAGE_OF.get(name, "baseline"),
            "metrics": means(per_user[name]),
            "curve": {metric: {str(k): float(curve[f"{metric}@{k}"].mean()) for k in CURVE_KS}
                      for metric in ("ndcg", "recall")},
            "beyond": beyond_accuracy(top[:, :ec.beyond_k], counts=h.counts, category=category,
                                      eligible=h.eligible, n_users=h.fs.vocabs.user.size),
            "segments": {s: seg(name, rows) for s, rows in segs.items()},
            "cold_items": {f"recall@{k}": float(cold[f"recall@{k}"].mean()) if cold else None
                           for k in ec.ks}}
    if "oracle" in methods:
        best = methods["oracle"]["metrics"]
        for v in methods.values():
            v["oracle_share"] = {k: (x / best[k] if best[k] else None)
                                 for k, x in v["metrics"].items()}
    return methods


def verdict_of(methods: dict[str, dict], significance: dict[str, dict[str, float]], key: str
               ) -> dict[str, object]:
    """The final list against the best baseline on `key`, plainly; shares of the oracle."""
    baselines = [n for n in methods if STAGE_OF.get(n) == "baseline"]
    final_v = methods["final"]["metrics"][key]
    verdict: dict[str, object] = {"metric": key, "final": final_v}
    if baselines:
        best_name = max(baselines, key=lambda n: methods[n]["metrics"][key])
        best_v = methods[best_name]["metrics"][key]
        verdict |= {"best_baseline": best_name, "best_baseline_value": best_v,
                    "final_minus_best": final_v - best_v,
                    "p_value": significance[best_name]["p_value"],
                    "beats_best_baseline": bool(final_v >= best_v)}
    if "oracle" in methods:
        verdict["oracle_share"] = methods["final"]["oracle_share"][key]
        verdict["oracle_candidates_share"] = methods["oracle_candidates"]["oracle_share"][key]
    return verdict


def evaluate(cfg: EngineConfig, *, epochs: int | None = None, report: Report = silent
             ) -> dict[str, object]:
    """Every figure of the evaluation report (see the module doc), JSON-ready."""
    ec = cfg.evaluation
    kmax, k0 = max(max(ec.ks), max(CURVE_KS)), ec.ks[0]
    timer = Timer()
    if epochs is None:
        report("evaluation: choose the two-tower epochs on the validation window")
        with timer("two-tower early stopping"):
            epochs = train_retrieval(cfg).result.best_epoch + 1
    report("evaluation: two-tower refit on train + valid")
    with timer("two-tower refit"):
        refit = train_retrieval(cfg, window="valid", epochs=epochs)
    report("evaluation: re-ranker on lists labelled before the test start")
    with timer("re-ranker training lists"):
        valid_start = build_features(cfg, window="train").as_of
        lists = training_lists(cfg, valid_start, epochs=epochs, report=report)
    with timer("re-ranker fit"):
        ranker = fit_ranker(lists, cfg)
    fs = build_features(cfg, window="valid")
    ctx, _ = retrieval_context(cfg, fs, refit)
    h = holdout(ctx)
    truth = h.truth
    if len(truth.users) == 0:
        raise DataError(cfg.data.interactions, "the test window has no user with a new "
                        "positive on an eligible product: nothing to evaluate")

    tops: dict[str, np.ndarray] = {}
    with timer("recengine lists"):
        made = recengine_lists(ctx, ranker, h, cfg, kmax, report)
    with timer("two-tower lists"):
        tops["two_tower"] = two_tower_lists(ctx, h, kmax)
    tops["reranked"], tops["final"] = made.reranked, made.final
    with timer("baseline tuning"):
        tuned = tune_baselines(cfg, report)
    for name, choice in tuned.items():
        report(f"evaluation: baseline {name}")
        with timer(f"baseline {name}"):
            scorer = make_baseline(name, h.fit, h.recent, choice["params"], ec)  # type: ignore[arg-type]
            tops[name] = top_items(scorer, truth.users, h.seen, h.eligible, kmax)
    with timer("oracle lists"):
        oracle = oracle_lists(cfg, h, kmax)
        if oracle is not None:
            tops["oracle_candidates"] = oracle_of_candidates(cfg, h, made.pairs, kmax)
            tops["oracle"] = oracle

    report("evaluation: metrics")
    per_user = {n: ranking_metrics(t, truth, ec.ks) for n, t in tops.items()}
    methods = method_figures(tops, per_user, h, ec)
    key = f"ndcg@{k0}"
    significance = {name: {"metric": key, **paired(per_user["final"][key], per_user[name][key],
                                                     ec.bootstrap_draws, ec.seed)}
                    for name in tops if name != "final" and STAGE_OF.get(name) != "oracle"}
    verdict = verdict_of(methods, significance, key)

    hits_c = gains_of(made.candidates, truth) > 0
    candidates = {"recall": float((hits_c.sum(1) / truth.n_relevant).mean()),
                  "mean_size": float((made.candidates >= 0).sum(1).mean()),
                  "items_found": int(hits_c.sum()), "relevant_items": int(truth.n_relevant.sum())}
    report("evaluation: ads")
    with timer("ads"):
        ads = ads_evaluation(cfg)
    return {
        "protocol": {"fit": "train + valid windows", "scored": "test window",
                     "test_start": str(fs.test_start), "users": int(len(truth.users)),
                     "relevant_items": int(truth.n_relevant.sum()),
                     "eligible_items": int(h.eligible.sum()), "ks": ec.ks, "epochs": epochs,
                     "ranker_trees": ranker.booster.best_iteration,
                     "training_lists": int(lists.select("cutoff", "user_idx").n_unique()),
                     "gain": "2^grade - 1 (purchase 4, add_to_cart 3, click 2, view 1)",
                     "cold_items": int(((h.counts == 0) & h.eligible).sum()),
                     "baselines": tuned},
        "metric_names": list(RANKING),
        "candidates": candidates, "methods": methods, "significance": significance,
        "verdict": verdict, "ads": ads, "seconds": timer.seconds, "beyond_k": ec.beyond_k,
    }


def _category(fs: FeatureSet) -> np.ndarray:
    out = np.full(fs.vocabs.item.size, -1, np.int64)
    items = fs.items.select("item_idx", pl.col("leaf_category").cast(pl.Int64).fill_null(-1))
    out[items["item_idx"].to_numpy()] = items["leaf_category"].to_numpy()
    return out
