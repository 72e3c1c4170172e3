"""Online latency of `Recommender.recommend` (single thread, k=10) p50 / p99 over a published
artifact, the candidates it re-ranks per call, and `recommend_batch` throughput against the
same users served one call at a time (the peer: batching should pay).

    python bench/bench_serving.py --artifacts artifacts [--calls 300]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from serving import Recommender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t = time.perf_counter()
    rec = Recommender.load(args.artifacts)
    load_s = time.perf_counter() - t
    state = rec._state  # noqa: SLF001 - the bench reads sizes only
    users = list(state.user_index)[: max(args.calls, args.batch)]
    rec.recommend(users[0], k=10)  # warm: caches and first-call set-up
    lat = []
    for u in users[: args.calls]:
        t = time.perf_counter()
        rec.recommend(u, k=10)
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1000
    from engine.candidates import generate_candidates
    n_cands = [generate_candidates(state.sources, np.array([state.user_index[u]])).height
               for u in users[:50]]
    t = time.perf_counter()
    frame = rec.recommend_batch(users[: args.batch], k=10)
    batch_s = time.perf_counter() - t
    single_rate = 1000 / lat_ms.mean()
    print(f"artifact {rec.version}: {state.ctx.index.size:,} products in a "
          f"{state.ctx.index.kind} index, {len(state.user_index):,} users; load {load_s:.2f} s")
    print(f"recommend(k=10), {args.calls} calls, one thread: p50 {np.percentile(lat_ms, 50):.1f} ms, "
          f"p99 {np.percentile(lat_ms, 99):.1f} ms; {np.mean(n_cands):.0f} candidates re-ranked "
          f"per call")
    print(f"recommend_batch({args.batch} users, k=10): {batch_s:.2f} s, "
          f"{args.batch / batch_s:,.0f} users/s vs {single_rate:,.0f} users/s one call at a time "
          f"({args.batch / batch_s / single_rate:.1f}x); {frame.height:,} rows")


if __name__ == "__main__":
    main()
