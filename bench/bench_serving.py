"""Benchmark 4, online: `Recommender.recommend()` latency (one thread, k=10) on a published
artifact, beside the same artifact's ANN search alone and the re-ranker's predict alone (the
two parts a request cannot avoid), and the time of each step of the request path (the
per-version arrays of `engine.request`), so the overhead over those two is visible; the same
with `explain=True`. Also `recommend_batch` throughput against the same users served one call
at a time, and the re-ranker's predictors side by side (`--predictors`: LightGBM with its
threads, LightGBM on one thread, and onnxruntime where it is installed, with each one's
largest difference from LightGBM's scores).

Latencies: p50 and p99 over --calls requests, median (min-max) of --repeats runs. The ANN
search is the `ann` source's call (`ItemIndex.search` with the user's seen items excluded and
the eligible mask); predict is `Booster.predict` on that user's candidate feature matrix,
built beforehand.

    python bench/bench_serving.py --artifacts artifacts [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from harness import Report, latencies

from engine.request.candidates import candidates
from engine.request.features import feature_matrix
from engine.rerank.ranker import early_exit_for, score_matrix
from engine.rerank.trees import model_trees, tree_range
from serving import Recommender


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument(
        "--predictors",
        action="store_true",
        help="also time each predictor of the re-ranker side by side",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    report = Report("online", args)
    t = time.perf_counter()
    rec = Recommender.load(args.artifacts)
    load_s = time.perf_counter() - t
    state = rec._state
    ctx, cfg = state.ctx, state.cfg
    rng = np.random.default_rng(0)
    ids = state.users.ids()
    pick = rng.choice(len(ids), min(len(ids), max(args.calls, args.batch)), replace=False)
    user_ids = [ids[i] for i in pick]
    idx = {u: state.users.get(u) for u in user_ids}
    calls = user_ids[: args.calls]
    print(
        f"artifact {rec.version}: {ctx.index.size:,} products in a {ctx.index.kind} index, "
        f"{len(ids):,} users; load {load_s:.1f} s",
        flush=True,
    )

    tables = state.tables
    cands = {u: candidates(tables, np.array([idx[u]])) for u in calls}
    matrices = {u: feature_matrix(tables, c, state.names) for u, c in cands.items()}
    whole_model = tree_range(state.booster, 0, model_trees(state.booster))
    exit_ = early_exit_for(cfg.rerank, 10)
    ptr, seen = tables.seen.indptr, tables.seen.cols["item_idx"]

    def search(u: str) -> object:
        i = idx[u]
        return ctx.index.search(
            ctx.user_vectors[[i]],
            cfg.candidates.ann,  # type: ignore[index]
            exclude=[seen[ptr[i] : ptr[i + 1]]],
            allowed=ctx.eligible,
        )

    parts = {
        "recommend(k=10), whole request": lambda u: rec.recommend(u, k=10),
        "ANN search alone (the ann source's index call)": search,
        "re-ranker predict alone (Booster.predict on the candidates)": lambda u: (
            whole_model.predict(matrices[u])
        ),
        "step: candidates (all sources, merged)": lambda u: candidates(tables, np.array([idx[u]])),
        "step: features of the candidates": lambda u: feature_matrix(tables, cands[u], state.names),
        "step: score (early exit as configured)": lambda u: score_matrix(
            state.booster, matrices[u], np.zeros(len(matrices[u]), np.int64), exit_
        ),
        "recommend(k=10, explain=True)": lambda u: rec.recommend(u, k=10, explain=True),
    }
    out = {}
    for name, fn in parts.items():
        out[name] = latencies(fn, calls, args.repeats)  # type: ignore[arg-type]
    n_cands = statistics.mean(len(m) for m in matrices.values())
    whole, ann_t, pred_t = (out[k] for k in list(parts)[:3])
    floor = statistics.median(ann_t[0]) + statistics.median(pred_t[0])
    ratio = statistics.median(whole[0]) / floor
    report.add(
        f"recommend(k=10) p50 ({n_cands:.0f} candidates re-ranked, "
        f"{len(matrices[calls[0]][0])} features, {state.booster.num_trees()} trees)",
        whole[0],
        "ms",
        ratio=("ANN alone + predict alone", ratio),
        goal="p50 <= 1.3x (ANN + predict)",
        met=ratio <= 1.3,
    )
    report.add(
        "recommend(k=10) p99",
        whole[1],
        "ms",
        goal="p99 <= 5 ms",
        met=statistics.median(whole[1]) <= 5,
    )
    for name in list(parts)[1:]:
        report.add(
            f"{name} p50",
            out[name][0],
            "ms",
            ratio=(
                "of the whole request",
                statistics.median(out[name][0]) / statistics.median(whole[0]),
            ),
        )
    t = time.perf_counter()
    frame = rec.recommend_batch(user_ids[: args.batch], k=10)
    batch_rate = args.batch / (time.perf_counter() - t)
    single_rate = 1e3 / statistics.median(whole[0])
    report.add(
        f"recommend_batch({args.batch} users, k=10)",
        batch_rate,
        "users/s",
        ratio=("one call at a time", batch_rate / single_rate),
        note=f"{frame.height:,} rows",
    )
    added = statistics.median(out["recommend(k=10, explain=True)"][0]) - statistics.median(whole[0])
    report.add("explain=True adds at p50", added, "ms", goal="<= 1 ms", met=added <= 1)
    report.add("Recommender.load", load_s, "s")
    if args.predictors:
        predictors(report, whole_model, list(matrices.values()), args.repeats)
    report.finish()


def predictors(report: Report, booster: object, xs: list[np.ndarray], repeats: int) -> None:
    """The re-ranker's predict over each request's candidates by each predictor at hand."""
    want = [booster.predict(x) for x in xs]  # type: ignore[attr-defined]
    ways = {
        "LightGBM predict (its OpenMP threads)": booster.predict,  # type: ignore[attr-defined]
        "LightGBM predict, num_threads=1": lambda x: booster.predict(x, num_threads=1),
    }  # type: ignore[attr-defined]
    try:
        import onnxmltools
        import onnxruntime as ort
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_lightgbm(
            booster, initial_types=[("x", FloatTensorType([None, xs[0].shape[1]]))], target_opset=15
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        ways["onnxruntime (float32 trees), 1 thread"] = lambda x: sess.run(
            None, {"x": x.astype(np.float32)}
        )[0].ravel()
    except ImportError:
        print("onnxruntime / onnxmltools not installed: not compared", flush=True)
    n = range(len(xs))
    for name, fn in ways.items():
        p50, _p99 = latencies(lambda i, fn=fn: fn(xs[i]), list(n), repeats)
        diff = max(float(np.nanmax(np.abs(fn(xs[i]) - want[i]))) for i in n)
        report.add(f"predictor: {name} p50", p50, "ms", note=f"max |score - LightGBM| {diff:.2e}")


if __name__ == "__main__":
    main()
