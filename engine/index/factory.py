"""The one place that decides which FAISS index serves the items, builds it, and measures it.

Small corpora get exact search (IndexFlatIP): nothing to tune and nothing lost. Medium ones
get IVF-Flat, which on clustered vectors reaches recall@100 0.999 at a tenth of a millisecond
per query; large ones IVF-PQ, whose compressed codes keep memory at `pq_m` bytes per item.
HNSW is there to be forced (fast queries, slow builds, no GPU). After building, the search
knob (nprobe or efSearch) doubles until recall@k against exact search on sample queries meets
the target (or stops gaining: IVF-PQ's codes cap its recall below exact), and the measured
figure travels with the index into the manifest.
"""

from __future__ import annotations

import math
import time

import faiss
import numpy as np

from engine.index.config import IndexConfig
from engine.index.faiss_device import to_search_device
from engine.index.item_index import ItemIndex, exact_top_k


def choose_kind(n: int, cfg: IndexConfig) -> str:
    """The index family for `n` items (the config's kind when it forces one)."""
    if cfg.kind != "auto":
        return cfg.kind
    if n <= cfg.exact_max:
        return "flat"
    return "ivf_flat" if n < cfg.pq_min else "ivf_pq"


def _nlist(n: int, cfg: IndexConfig) -> int:
    return cfg.nlist or int(min(max(16, 4 * math.sqrt(n)), 65536, max(1, n // 39)))


def _make(kind: str, vectors: np.ndarray, cfg: IndexConfig) -> tuple[faiss.Index, dict]:
    n, d = vectors.shape
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(d), {}
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, cfg.hnsw_m, ip)
        hnsw.hnsw.efConstruction = cfg.ef_construction
        return hnsw, {
            "m": cfg.hnsw_m,
            "ef_construction": cfg.ef_construction,
            "ef_search": cfg.ef_search or 64,
        }
    nlist = _nlist(n, cfg)
    quantizer = faiss.IndexFlatIP(d)
    index: faiss.IndexIVF
    params: dict[str, int | float] = {"nlist": nlist, "nprobe": cfg.nprobe or 8}
    if kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
    elif kind == "ivf_pq":
        m = cfg.pq_m or max(1, d // 2)
        if d % m:
            raise ValueError(f"index.pq_m = {m} must divide the vector dimension {d}")
        pq = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, ip)
        params["pq_m"] = pq.pq.M
        index = pq
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.cp.seed = cfg.seed
    return index, params


def measure_recall(index: ItemIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |approximate top-k ∩ exact top-k| / k over the sample queries."""
    _, items = index.search(queries, k)
    rows = index.rows_of(items)
    hits = [len(np.intersect1d(r[r >= 0], t)) for r, t in zip(rows, truth, strict=True)]
    return float(np.mean(hits)) / min(k, index.size)


def build_index(
    vectors: np.ndarray, item_idx: np.ndarray, cfg: IndexConfig, queries: np.ndarray | None = None
) -> tuple[ItemIndex, dict[str, float]]:
    """Build, tune and measure the index for `vectors` (n, D) of items `item_idx`.

    `queries` are sample query vectors (user vectors); without them, item vectors stand in.
    Returns the index and build figures (seconds, recall) for the manifest.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    kind = choose_kind(n, cfg)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    raw, params = _make(kind, vectors, cfg)
    if kind in ("ivf_flat", "ivf_pq"):
        sample = vectors[rng.choice(n, min(n, params["nlist"] * 64), replace=False)]
        raw.train(sample)
    raw.add(vectors)
    build_s = time.perf_counter() - t0
    index, gpu = to_search_device(raw, kind, use_gpu=cfg.use_gpu)
    built = ItemIndex(
        index=index,
        item_idx=np.asarray(item_idx, np.int64),
        kind=kind,
        params=params,
        on_gpu=gpu,
        vectors=vectors if kind == "flat" else None,
    )
    if queries is None or len(queries) == 0:
        queries = vectors[rng.choice(n, min(n, cfg.eval_queries), replace=False)]
    else:
        queries = np.ascontiguousarray(
            queries[rng.choice(len(queries), min(len(queries), cfg.eval_queries), replace=False)],
            dtype=np.float32,
        )
    k = min(cfg.k, n)
    truth = np.concatenate(
        [
            exact_top_k(queries[a : a + 64], vectors, k)  # bounded memory
            for a in range(0, len(queries), 64)
        ]
    )
    recall = measure_recall(built, queries, truth, k)
    knob = "nprobe" if "nprobe" in params else "ef_search" if "ef_search" in params else None
    forced = {"nprobe": cfg.nprobe, "ef_search": cfg.ef_search}.get(knob or "")
    limit = {"nprobe": params.get("nlist", 1), "ef_search": 4096}.get(knob or "", 0)
    while knob and forced is None and recall < cfg.recall_target and built.params[knob] < limit:
        previous = (int(built.params[knob]), recall)
        built.set_param(knob, min(previous[0] * 2, limit))
        recall = measure_recall(built, queries, truth, k)
        if recall - previous[1] < 0.002:  # a plateau (PQ's compression bounds it): step back
            built.set_param(knob, previous[0])
            recall = previous[1]
            break
    built.recall, built.recall_k = recall, k
    return built, {
        "build_seconds": build_s,
        "recall": recall,
        "recall_k": k,
        "eval_queries": len(queries),
    }
