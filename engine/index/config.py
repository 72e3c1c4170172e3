"""Settings of the item index: the `[index]` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config import Section

IndexKind = Literal["flat", "hnsw", "ivf_flat", "ivf_pq"]


class IndexConfig(Section):
    """Which FAISS index serves the item vectors, and how good it must be.

    With ``kind = "auto"`` the corpus size picks the family (exact up to `exact_max` items,
    IVF-Flat up to `pq_min`, IVF-PQ above), then the search-time knob (nprobe, efSearch) is
    raised until recall@`k` against exact search on `eval_queries` sample queries reaches
    `recall_target`. Any other kind forces that index and the given parameters.
    """

    kind: Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_pq"] = "auto"
    recall_target: float = Field(default=0.95, gt=0.0, le=1.0)
    k: int = Field(default=100, ge=1)
    """Depth at which recall is measured and tuned (the candidate count the ANN source asks)."""
    exact_max: int = Field(default=100_000, ge=1)
    pq_min: int = Field(default=5_000_000, ge=1)
    eval_queries: int = Field(default=1000, ge=10)
    nlist: int | None = Field(default=None, ge=1)
    """IVF cells; None: about 4 x sqrt(n)."""
    nprobe: int | None = Field(default=None, ge=1)
    """IVF cells visited per query; None: tuned to the recall target."""
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=200, ge=8)
    """HNSW build depth; faiss's default 40 reaches only ~0.9 recall@100 on clustered vectors."""
    ef_search: int | None = Field(default=None, ge=1)
    pq_m: int | None = Field(default=None, ge=1)
    """Sub-quantizers of IVF-PQ (bytes per vector); None: dim / 2."""
    use_gpu: bool = True
    """Use every GPU faiss sees (flat and IVF kinds); ignored where there is none."""
    seed: int = 0
