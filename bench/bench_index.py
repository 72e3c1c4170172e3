"""Item index: each FAISS kind (flat, IVF-Flat, HNSW, IVF-PQ) as `build_index` builds and tunes
it, against numpy brute force (the peer) and against the machine's limits measured in the same
run, plus the two filter mechanisms of `ItemIndex.search` side by side.

Data: --n x --dim unit vectors shaped like embeddings (4,000 Gaussian cluster centres on the
unit sphere, point = centre + noise, L2-normalised, seed 0). The noise (sd 0.035 per dimension
at dim 64) puts a query's 10th-nearest neighbour at cosine ~0.92, near the 0.93 of the two-tower
item vectors in artifacts/work/embeddings. Queries are perturbed corpus vectors (a random
item plus the same noise, normalised, never a copy): the tuning set `build_index` sees, the
held-out set recall is measured on, and the timing set are three separate draws.

Printed, every timed figure the median (min-max) of --repeats runs:

* limits: float32 GEMM GFLOP/s (numpy 4096 x 4096 matmul) and memory bandwidth (numpy sum and
  copy of a 1 GiB array, split over the cores);
* per kind: build seconds (train + add, one build), serialised size and RSS growth, the tuned
  parameters, recall@k against exact search on the held-out queries, batch-1 latency (median
  and p99 of single queries) and queries/s at batch 1024;
* the peer, `exact_top_k` (matmul + argpartition), at batch 1 and 1024, as shares of the GEMM
  and bandwidth limits;
* filters, for flat and IVF-Flat: a 5% global block list given as the `allowed=` mask, applied
  as a FAISS selector against as an over-fetch scaled by the blocked share (`mask=`; the
  default picks per kind from these figures), and 50 random per-query exclusions against none.

    python bench/bench_index.py --n 1000000 --dim 64 --repeats 3

On dev-2c (2 cores) that takes about 10 minutes (--no-filters skips the filter tables).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np
from harness import Report, latencies, limits, peak_rss, rss, summary

from engine.index import IndexConfig, ItemIndex, build_index, exact_top_k
from engine.index.factory import measure_recall
from engine.index.faiss_device import GPU_KINDS, gpu_count

KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq")
CLUSTERS = 4000
NOISE = 0.035  # per-dimension sd at dim 64: same-cluster pairs at cosine ~1 / (1 + 64 sd^2)


def clustered(n: int, dim: int, noise_64: float, seed: int) -> tuple[np.ndarray, float]:
    """(n, dim) float32 unit vectors around CLUSTERS Gaussian centres, and the noise sd used."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = noise_64 * np.sqrt(64 / dim)  # same centre-to-noise ratio at any dimension
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 1 << 18):
        hi = min(n, lo + (1 << 18))
        out[lo:hi] = centres[rng.integers(0, CLUSTERS, hi - lo)]
        out[lo:hi] += noise * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, noise


def perturbed(vectors: np.ndarray, q: int, noise: float, seed: int) -> np.ndarray:
    """`q` queries: random corpus vectors plus fresh noise, normalised (never copies)."""
    rng = np.random.default_rng(seed)
    out = vectors[rng.integers(0, len(vectors), q)]
    out += noise * rng.standard_normal(out.shape, dtype=np.float32)
    return np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True))


def truth_chunked(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int) -> np.ndarray:
    return np.concatenate(
        [exact_top_k(queries[i : i + chunk], vectors, k) for i in range(0, len(queries), chunk)]
    )


class Others:
    """CPU time other processes took since the last call, as a share of all cores."""

    def __init__(self) -> None:
        self.last = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:8]]
        busy = (sum(f) - f[3] - f[4]) / tick  # all but idle and iowait
        with open("/proc/self/stat") as fh:
            mine = sum(int(x) for x in fh.read().rsplit(")", 1)[1].split()[11:13]) / tick
        return time.perf_counter(), busy, mine

    def share(self) -> str:
        now = self._read()
        wall, busy, mine = (a - b for a, b in zip(now, self.last, strict=True))
        self.last = now
        other = max(0.0, busy - mine) / max(wall * (os.cpu_count() or 1), 1e-9)
        return f"{wall:.0f} s; other processes used {other:.0%} of the CPUs meanwhile"


def single(
    fn: Callable[[np.ndarray], object], queries: np.ndarray, repeats: int
) -> tuple[list[float], list[float]]:
    """Per run: median and p99 latency (ms) of one query at a time over `queries`."""
    return latencies(lambda q: fn(q[None]), queries, repeats)


def batched(
    fn: Callable[[np.ndarray], object], batches: list[np.ndarray], repeats: int
) -> list[float]:
    """Per run: queries/s over all `batches` (after a warm-up on 64 queries)."""
    fn(batches[0][:64])
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        rates.append(sum(len(b) for b in batches) / (time.perf_counter() - t0))
    return rates


def filters(
    name: str,
    index: ItemIndex,
    single_q: np.ndarray,
    batch: np.ndarray,
    k: int,
    repeats: int,
    n: int,
    seed: int,
) -> None:
    """Global block list as a FAISS selector vs a scaled over-fetch (both via `allowed=`), and
    50 random per-query exclusions vs none, at batch 1 and one batch of len(batch)."""
    rng = np.random.default_rng(seed)
    blocked = np.sort(rng.choice(n, n // 20, replace=False))
    allowed = np.ones(n, bool)
    allowed[blocked] = False
    fifty = [rng.choice(n, 50, replace=False) for _ in range(max(len(batch), len(single_q)))]
    variants: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
        "no filter": lambda q: index.search(q, k),
        "5% blocked, mask as FAISS selector": lambda q: index.search(
            q, k, allowed=allowed, mask="selector"
        ),
        "5% blocked, mask as scaled over-fetch": lambda q: index.search(
            q, k, allowed=allowed, mask="overfetch"
        ),
        "50 per-query exclude= (over-fetch)": lambda q: index.search(q, k, exclude=fifty[: len(q)]),
    }
    print(
        f"  filters on {name} (k={k}; {len(blocked):,} items blocked = 5%; batch-1 over "
        f"{len(single_q)} queries, batch {len(batch)} one batch per run):"
    )
    if name == "flat":
        print(
            "    (flat at <= 8 queries searches with numpy, which applies the mask to the scores "
            "either way)"
        )
    print(f"    {'':42s} {'batch 1 q/s':>24s} {'batch ' + str(len(batch)) + ' q/s':>24s}")
    rates = {}
    for label, fn in variants.items():
        med, _ = single(fn, single_q, repeats)
        b = batched(fn, [batch], repeats)
        rates[label] = (1e3 / statistics.median(med), statistics.median(b))
        print(
            f"    {label:42s} {summary([1e3 / m for m in med]):>24s} {summary(b):>24s}", flush=True
        )
    sel, over = (
        rates["5% blocked, mask as FAISS selector"],
        rates["5% blocked, mask as scaled over-fetch"],
    )
    none, fif = rates["no filter"], rates["50 per-query exclude= (over-fetch)"]
    print(
        f"    selector / over-fetch: {sel[0] / over[0]:.2f}x at batch 1, "
        f"{sel[1] / over[1]:.2f}x at batch {len(batch)}; 50 exclusions cost "
        f"{1 - fif[0] / none[0]:.0%} at batch 1, {1 - fif[1] / none[1]:.0%} at batch "
        f"{len(batch)}"
    )
    _, a = index.search(batch[:64], k, allowed=allowed, mask="selector")
    _, b = index.search(batch[:64], k, allowed=allowed, mask="overfetch")
    same = np.mean([set(x) == set(y) for x, y in zip(a, b, strict=True)])
    leaked = int(np.isin(a, blocked).sum() + np.isin(b, blocked).sum())
    print(
        f"    check: both mechanisms return the same top-{k} for {same:.0%} of 64 queries; "
        f"blocked items returned: {leaked}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated subset of " + ", ".join(KINDS)
    )
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--recall-target", type=float, default=0.95)
    ap.add_argument(
        "--tune-queries",
        type=int,
        default=500,
        help="build_index's eval_queries (its exact search holds Q x n x 16 bytes)",
    )
    ap.add_argument("--held-out", type=int, default=1000, help="queries recall is measured on")
    ap.add_argument("--single", type=int, default=200, help="single queries per timed run")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=3, help="batches per timed run")
    ap.add_argument(
        "--chunk",
        type=int,
        default=256,
        help="numpy brute force splits a batch into chunks of this many queries",
    )
    ap.add_argument(
        "--hnsw-n", type=int, default=0, help="build HNSW on the first N vectors only (0: all)"
    )
    ap.add_argument(
        "--noise",
        type=float,
        default=NOISE,
        help="per-dimension noise sd around the unit centres (scaled to dim 64)",
    )
    ap.add_argument("--no-filters", action="store_true")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU indexes")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := set(kinds) - set(KINDS):
        ap.error(f"unknown kinds {sorted(bad)}")
    threads = faiss.omp_get_max_threads()
    k, r = args.k, args.repeats
    start, others = time.perf_counter(), Others()

    report = Report("retrieval", args)
    lim = limits(max(r, 5), threads)
    gemm, read, copy = lim["gemm_gflops"], lim["read_gbs"], lim["copy_gbs"]
    gemm_limit = statistics.median(gemm)
    print(f"limits ({threads} threads, faiss {faiss.__version__}, numpy {np.__version__}):")
    report.add("float32 GEMM 4096^3", gemm, "GFLOP/s")
    report.add("memory read (sum of 1 GiB)", read, "GB/s")
    report.add("memory copy (1 GiB, read + write)", copy, "GB/s")

    t0 = time.perf_counter()
    vectors, noise = clustered(args.n, args.dim, args.noise, seed=0)
    n, d = vectors.shape
    item_idx = np.arange(n, dtype=np.int64)
    tune = perturbed(vectors, args.tune_queries, noise, seed=1)
    held = perturbed(vectors, args.held_out, noise, seed=2)
    timing = perturbed(vectors, args.batch * args.batches, noise, seed=3)
    ones, batches = timing[: args.single], np.split(timing, args.batches)
    truth = truth_chunked(held, vectors, k, args.chunk)
    cos = np.einsum("qd,qkd->qk", held, vectors[truth[:, [0, 9, k - 1]]])
    print(
        f"data: {n:,} x {d} unit vectors, {CLUSTERS:,} clusters, noise sd {noise:.3f}; "
        f"queries: {len(tune)} tuning, {len(held)} held-out, {len(timing)} timing "
        f"({time.perf_counter() - t0:.1f} s incl. exact truth)"
    )
    print(
        f"  held-out queries' true neighbours 1 / 10 / {k}: median cosine "
        + " / ".join(f"{c:.3f}" for c in np.median(cos, axis=0)),
        flush=True,
    )
    print(f"  [{others.share()}]")

    # the peer: numpy brute force, matmul + argpartition (+ argsort of the k)
    scan_bytes, flops = n * d * 4, 2 * args.batch * n * d
    med1, p991 = single(lambda q: exact_top_k(q, vectors, k), ones, r)
    mm1, _ = single(lambda q: q @ vectors.T, ones, r)
    bb = batched(
        lambda b: [
            exact_top_k(b[i : i + args.chunk], vectors, k) for i in range(0, len(b), args.chunk)
        ],
        batches,
        r,
    )
    bound_ms = scan_bytes / statistics.median(read) / 1e6
    gf = statistics.median(bb) / args.batch * flops / 1e9
    print(f"numpy brute force (exact_top_k), k={k}:")
    print(
        f"  batch 1   : {summary(med1, '.2f')} ms median, p99 {summary(p991, '.2f')} ms "
        f"-> {1e3 / statistics.median(med1):,.0f} q/s; of which the matmul "
        f"{summary(mm1, '.2f')} ms"
    )
    print(
        f"              bandwidth bound {bound_ms:.2f} ms ({scan_bytes / 1e6:.0f} MB read): "
        f"query at {bound_ms / statistics.median(med1):.0%} of it, matmul alone at "
        f"{bound_ms / statistics.median(mm1):.0%}"
    )
    print(
        f"  batch {args.batch}: {summary(bb)} q/s (chunks of {args.chunk}) = {gf:,.0f} GFLOP/s, "
        f"{gf / statistics.median(gemm):.0%} of GEMM"
    )
    report.add(
        "numpy brute force, batch 1 latency",
        med1,
        "ms",
        ratio=("of the bandwidth bound", bound_ms / statistics.median(med1)),
    )
    report.add(
        f"numpy brute force, batch {args.batch}",
        bb,
        "q/s",
        ratio=("of the GEMM limit", gf / gemm_limit),
    )
    print(f"  [{others.share()}]", flush=True)
    peer = {"single_ms": statistics.median(med1), "batch_qps": statistics.median(bb)}

    rows = []
    devices = ["cpu"] + (["gpu"] if gpu_count() > 0 and not args.cpu_only else [])
    for kind, dev in [
        (kind, dev) for dev in devices for kind in kinds if dev == "cpu" or kind in GPU_KINDS
    ]:
        sub = args.hnsw_n if kind == "hnsw" and 0 < args.hnsw_n < n else n
        vec, h_truth, note = vectors, truth, ""
        if sub < n:
            vec = vectors[:sub]  # HNSW's build is slow: a subset, with its own exact truth
            h_truth = truth_chunked(held, vec, k, args.chunk)
            note = f" [ON A {sub:,}-VECTOR SUBSET, recall against exact search on it]"
        cfg = IndexConfig(
            kind=kind,
            k=k,
            eval_queries=args.tune_queries,
            recall_target=args.recall_target,
            use_gpu=dev == "gpu",
        )
        before = rss()
        t0 = time.perf_counter()
        index, figs = build_index(vec, item_idx[:sub], cfg, queries=tune)
        total = time.perf_counter() - t0
        grown = rss() - before
        size = len(faiss.serialize_index(index.index))
        recall = measure_recall(index, held, h_truth, k)
        params = ", ".join(f"{a}={b}" for a, b in index.params.items()) or "-"
        print(f"{kind} ({dev}){note}: {params}")
        print(
            f"  build {figs['build_seconds']:.1f} s (train + add, 1 run; build_index with "
            f"tuning {total:.1f} s); serialised {size / 1e6:,.0f} MB "
            f"({size / sub:.0f} B/vector), RSS +{grown / 1e6:,.0f} MB"
        )
        print(
            f"  recall@{k}: {recall:.4f} on {len(held)} held-out queries "
            f"(tuning set: {figs['recall']:.4f})",
            flush=True,
        )
        med, p99 = single(lambda q, ix=index: ix.search(q, k), ones, r)
        bq = batched(lambda b, ix=index: ix.search(b, k), batches, r)
        print(
            f"  batch 1   : {summary(med, '.3f')} ms median, p99 {summary(p99, '.3f')} ms -> "
            f"{1e3 / statistics.median(med):,.0f} q/s"
        )
        line = f"  batch {args.batch}: {summary(bq)} q/s"
        if kind == "flat":
            g = statistics.median(bq) / args.batch * flops / 1e9
            line += f" = {g:,.0f} GFLOP/s, {g / gemm_limit:.0%} of GEMM"
        print(line, flush=True)
        label = kind + ("" if dev == "cpu" else " gpu") + (f" ({sub // 1000}k)" if sub < n else "")
        rows.append((label, recall, statistics.median(med), statistics.median(bq), sub))
        report.add(f"{label}: build (train + add)", figs["build_seconds"], "s")
        report.add(
            f"{label}: memory (RSS growth)",
            grown / 1e6,
            "MB",
            note=f"serialised {size / 1e6:,.0f} MB",
        )
        report.add(f"{label}: recall@{k} vs exact", recall, "", note=params)
        report.add(
            f"{label}: batch 1 latency",
            med,
            "ms",
            ratio=("numpy brute force speed", peer["single_ms"] / statistics.median(med)),
        )
        if kind == "flat" and dev == "cpu":
            report.add(
                f"{label}: batch {args.batch}",
                bq,
                "q/s",
                ratio=("of the GEMM limit", g / gemm_limit),
                goal=">= 0.8x GEMM",
                met=g / gemm_limit >= 0.8,
            )
        else:
            report.add(
                f"{label}: batch {args.batch}",
                bq,
                "q/s",
                ratio=("numpy brute force speed", statistics.median(bq) / peer["batch_qps"]),
            )
        if kind in ("flat", "ivf_flat") and dev == "cpu" and not args.no_filters:
            filters(kind, index, ones, batches[0], k, r, n, seed=4)
        print(f"  [{others.share()}]", flush=True)
        del index
        gc.collect()

    flat = next((row for row in rows if row[0] == "flat"), None)
    print(
        f"speed-up over brute force on all {n:,} vectors: numpy (batch 1 "
        f"{peer['single_ms']:.2f} ms, batch {args.batch} {peer['batch_qps']:,.0f} q/s)"
        + (f" and faiss flat (batch {args.batch} {flat[3]:,.0f} q/s)" if flat else "")
        + ":"
    )
    for name, recall, ms, qps, sub in rows:
        scale = "" if sub == n else f"  (index over {sub:,} vectors: not comparable 1:1)"
        vs_flat = f", {qps / flat[3]:5.1f}x faiss flat" if flat else ""
        print(
            f"  {name:14s} recall@{k} {recall:.4f}  batch 1 {peer['single_ms'] / ms:6.1f}x "
            f"numpy   batch {args.batch} {qps / peer['batch_qps']:6.1f}x numpy{vs_flat}"
            f"{scale}"
        )
    print(
        f"total {(time.perf_counter() - start) / 60:.1f} min; peak RSS {peak_rss() / 2**30:.1f} GiB"
    )
    report.finish()


if __name__ == "__main__":
    main()
