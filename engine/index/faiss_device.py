"""Where FAISS runs, decided in one place: every GPU faiss sees, or all CPU cores."""

from __future__ import annotations

import faiss

# Batched exact search: faiss skips BLAS for small query batches and is then ~12x slower.
faiss.cvar.distance_compute_blas_threshold = 16

GPU_KINDS = ("flat", "ivf_flat", "ivf_pq")  # HNSW has no GPU implementation in faiss


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def wants_gpu(kind: str, *, use_gpu: bool) -> bool:
    return use_gpu and kind in GPU_KINDS and gpu_count() > 0


def to_search_device(index: faiss.Index, kind: str, *, use_gpu: bool) -> tuple[faiss.Index, bool]:
    """(the index on every GPU, True) when there are GPUs and the kind runs there; else
    (the CPU index, False), searched with all cores."""
    if wants_gpu(kind, use_gpu=use_gpu):
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # split the vectors over the GPUs rather than copy them
        return faiss.index_cpu_to_all_gpus(index, co=options), True
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    return index, False


def to_cpu(index: faiss.Index, *, on_gpu: bool) -> faiss.Index:
    """A CPU copy for writing to disk (GPU indexes cannot be serialised directly)."""
    return faiss.index_gpu_to_cpu(index) if on_gpu else index
