"""A FAISS index over item vectors with the filters recommendation needs.

Rows of the FAISS index are positions 0..n-1; `item_idx[row]` maps them back to item indices.
Two kinds of exclusion, each applied where it is cheapest:

* global (`allowed`, a mask over items: unavailable items, ads out of flight) goes into the
  search itself as a FAISS `IDSelectorBitmap` for IVF and HNSW, so blocked items never take a
  slot; for the exact kind and on GPU it is an over-fetch scaled by the blocked share;
* per query (`exclude`, the items a user has consumed) is over-fetch + filter: ask for
  k + (longest exclusion list) and drop hits in the list; a query that still comes up short
  is searched again, four times deeper.

Result: (scores, items) of shape (Q, k), best first; -1 / -inf pad rows with fewer than k
eligible items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import polars as pl

from engine.index.faiss_device import to_cpu, to_search_device
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path, sha256_file, write_parquet

INDEX_FILE = "items.faiss"
META_FILE = "index.json"
ROWS_FILE = "rows.parquet"
SINGLE_QUERY_MAX = 8  # up to this many queries, exact search is a numpy matmul (faster there)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) row positions of the k largest inner products, best first (numpy)."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _touch(index: faiss.Index) -> None:
    """Map every page of an in-place index now, with one search over all its inverted lists,
    so that no request pays the page faults of its first visit to a list."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index: flat codes are read whole by the first search
        return
    if ivf.ntotal:
        probe = faiss.SearchParametersIVF()
        probe.nprobe = ivf.nlist
        index.search(np.zeros((1, index.d), np.float32), 1, params=probe)


@dataclass
class ItemIndex:
    """A built or loaded index and what is known about it."""

    index: faiss.Index
    item_idx: np.ndarray  # (n,) item index of each row
    kind: str
    params: dict[str, int | float] = field(default_factory=dict)
    recall: float | None = None  # measured recall@recall_k against exact search
    recall_k: int | None = None
    on_gpu: bool = False
    vectors: np.ndarray | None = None  # kept for the exact kind's numpy path

    def __post_init__(self) -> None:
        self._masks: tuple[tuple[np.ndarray, np.ndarray | None, np.ndarray | None], ...] = ()
        self._row_of = np.full(int(self.item_idx.max(initial=0)) + 1, -1, np.int64)
        self._row_of[self.item_idx] = np.arange(len(self.item_idx))
        self._apply_params()

    @property
    def size(self) -> int:
        return len(self.item_idx)

    def rows_of(self, items: np.ndarray) -> np.ndarray:
        """Row of each item index (-1 for items not in the index)."""
        items = np.asarray(items, np.int64)
        inside = (items >= 0) & (items < len(self._row_of))
        return np.where(inside, self._row_of[np.where(inside, items, 0)], -1)

    def _apply_params(self) -> None:
        if "nprobe" in self.params:
            faiss.ParameterSpace().set_index_parameter(
                self.index, "nprobe", int(self.params["nprobe"])
            )
        if "ef_search" in self.params:
            faiss.ParameterSpace().set_index_parameter(
                self.index, "efSearch", int(self.params["ef_search"])
            )

    def set_param(self, name: str, value: int) -> None:
        self.params[name] = value
        self._apply_params()

    # ----------------------------------------------------------------- search
    def _mask(self, allowed: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed rows, their bitmap) for an item mask; the last two masks' are kept, since
        a job or a service passes the same eligibility array with nearly every call (a
        filtered request's own mask, made anew, must not evict it)."""
        if allowed is None:
            return None, None
        masks = self._masks  # one read, one write: concurrent calls never mix two masks
        for n, entry in enumerate(masks):
            if entry[0] is allowed:
                if n:  # most recent first: a filtered request's mask goes before it
                    self._masks = (entry, *masks[:n], *masks[n + 1 :])
                return entry[1], entry[2]
        rows = np.asarray(allowed, bool)[self.item_idx]
        every = bool(rows.all())
        entry = (
            allowed,
            None if every else rows,
            None if every else np.packbits(rows, bitorder="little"),
        )
        self._masks = (entry, *masks[:1])
        return entry[1], entry[2]

    def _selector_params(
        self, bits: np.ndarray, blocked: np.ndarray | None = None
    ) -> faiss.SearchParameters:
        """Search parameters whose selector admits the rows of `bits` (and, for one query,
        none of the rows `blocked`: a hash set beside the bitmap)."""
        bitmap = faiss.IDSelectorBitmap(bits)  # type: ignore[call-arg,arg-type]  # faiss's stub lacks its wrapper's one-array form (n taken from the array)
        parts: list[faiss.IDSelector] = [bitmap]
        sel: faiss.IDSelector = bitmap
        if blocked is not None:
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(blocked, np.int64))
            inverse = faiss.IDSelectorNot(batch)
            sel = faiss.IDSelectorAnd(bitmap, inverse)
            parts += [batch, inverse, sel]
        params: faiss.SearchParameters
        if "nprobe" in self.params:
            ivf = faiss.SearchParametersIVF()
            ivf.nprobe = int(self.params["nprobe"])
            params = ivf
        elif "ef_search" in self.params:
            hnsw = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # faiss's stub omits SearchParametersHNSW
            hnsw.efSearch = int(self.params["ef_search"])
            params = hnsw
        else:
            params = faiss.SearchParameters()
        params.sel = sel
        # the C++ objects hold raw pointers to each other: keep them alive with the parameters
        params.referenced_objects = parts  # type: ignore[attr-defined]  # set by faiss's Python wrapper, not in its stub
        return params

    def _raw(
        self,
        queries: np.ndarray,
        depth: int,
        rows_ok: np.ndarray | None,
        bits: np.ndarray | None,
        blocked: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`depth` (scores, rows); `bits` (and `blocked`, for one query) filter inside
        FAISS, `rows_ok` in numpy."""
        depth = min(depth, self.size)
        if self.vectors is not None and len(queries) <= SINGLE_QUERY_MAX:
            scores = queries @ self.vectors.T
            if rows_ok is not None:
                scores[:, ~rows_ok] = -np.inf
            part = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            top = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            rows = np.take_along_axis(part, order, axis=1)
            top = np.take_along_axis(top, order, axis=1)
            return top, np.where(np.isfinite(top), rows, -1)
        params = self._selector_params(bits, blocked) if bits is not None else None
        # a few queries: one thread (OpenMP start-up costs more than the scan, 0.48 vs 0.11 ms)
        threads = faiss.omp_get_max_threads()
        if len(queries) <= SINGLE_QUERY_MAX:
            faiss.omp_set_num_threads(1)
        try:
            scores, rows = self.index.search(queries, depth, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        del params  # the selector only had to live through the search; `bits` is cached
        return scores, rows

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: list[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
        mask: Literal["auto", "selector", "overfetch"] = "auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query (Q, D) float32, never returning an item in that query's
        `exclude` (item indices) nor one where `allowed` (bool, by item index) is False.

        The global mask goes where it was measured to be fastest (BENCHMARKS.md): into the
        search as an `IDSelectorBitmap` for IVF and HNSW; for the exact kind (where a selector
        turns off faiss's BLAS path, 16x slower) and on GPU (no selectors) it is an over-fetch
        scaled by the blocked share, then filtered. `mask` forces one way (for measuring).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        q = len(queries)
        rows_ok, bits = self._mask(allowed)
        selector_pays = self.kind != "flat" if mask == "auto" else mask == "selector"
        numpy_path = self.vectors is not None and q <= SINGLE_QUERY_MAX  # masks the scores
        use_selector = rows_ok is not None and not self.on_gpu and selector_pays and not numpy_path
        blocked = (
            [self.rows_of(e) for e in exclude]
            if exclude is not None
            else [np.empty(0, np.int64)] * q
        )
        blocked = [b[b >= 0] for b in blocked]
        extra = max((len(b) for b in blocked), default=0)
        if q == 1 and extra and use_selector:
            # one query (a request): its exclusions go into the selector too, so FAISS keeps
            # exactly the top k it may return, with no deeper search and no filter after it
            scores, rows = self._raw(queries, k, None, bits, blocked[0])
            found = rows >= 0
            out_s = np.full((1, k), -np.inf, np.float32)
            out_i = np.full((1, k), -1, np.int64)
            out_s[:, : rows.shape[1]] = np.where(found, scores, -np.inf)
            out_i[:, : rows.shape[1]] = np.where(found, self.item_idx[np.maximum(rows, 0)], -1)
            return out_s, out_i
        depth = k + extra
        post_mask = None if use_selector else rows_ok  # the rows to keep, masked after FAISS
        if post_mask is not None:
            share = max(float(post_mask.mean()), 1e-3)
            depth = int(np.ceil(depth / share * 1.2)) + 16
        out_s = np.full((q, k), -np.inf, np.float32)
        out_i = np.full((q, k), -1, np.int64)
        todo = np.arange(q)
        while len(todo):
            scores, rows = self._raw(
                queries[todo], depth, post_mask, bits if use_selector else None
            )
            keep = rows >= 0
            if post_mask is not None:
                keep &= post_mask[np.maximum(rows, 0)]
            if extra:
                lengths = np.array([len(blocked[t]) for t in todo])
                flat = (
                    np.concatenate([blocked[t] for t in todo])
                    if lengths.sum()
                    else np.empty(0, np.int64)
                )
                owner = np.repeat(np.arange(len(todo)), lengths)
                bad = np.isin(
                    np.arange(len(todo))[:, None] * (self.size + 1) + rows,
                    owner * (self.size + 1) + flat,
                )
                keep &= ~bad
            order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
            got = np.take_along_axis(keep, order, axis=1)
            sel_rows = np.take_along_axis(rows, order, axis=1)
            out_s[todo] = np.where(got, np.take_along_axis(scores, order, axis=1), -np.inf)
            out_i[todo] = np.where(got, self.item_idx[np.maximum(sel_rows, 0)], -1)
            short = got.sum(1) < min(k, self.size)
            if depth >= self.size or not short.any():
                break
            todo, depth = todo[short], min(depth * 4, self.size)
        return out_s, out_i

    # ---------------------------------------------------------------- persist
    def save(self, folder: Path) -> dict[str, object]:
        """Write items.faiss (FAISS's own format), rows.parquet and index.json (kind,
        parameters, measured recall, the index file's sha256). Returns the JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / INDEX_FILE) as tmp:
            faiss.write_index(to_cpu(self.index, on_gpu=self.on_gpu), str(tmp))
        write_parquet(pl.DataFrame({"item_idx": self.item_idx}), folder / ROWS_FILE)
        meta = {
            "kind": self.kind,
            "params": self.params,
            "size": self.size,
            "recall": self.recall,
            "recall_k": self.recall_k,
            "sha256": sha256_file(folder / INDEX_FILE),
        }
        with atomic_path(folder / META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return meta

    @classmethod
    def load(cls, folder: Path, *, use_gpu: bool = True, checked: bool = False) -> ItemIndex:
        """Read an index written by `save`, refusing one whose file does not match its
        recorded checksum (`checked`: the caller has just verified the file against a
        manifest, so it is not read a second time for that)."""
        folder = Path(folder)
        for name in (INDEX_FILE, META_FILE, ROWS_FILE):
            if not (folder / name).is_file():
                raise ArtifactError(folder / name, "index file missing")
        meta = json.loads((folder / META_FILE).read_text())
        if not checked and sha256_file(folder / INDEX_FILE) != meta["sha256"]:
            raise ArtifactError(
                folder / INDEX_FILE,
                "checksum does not match index.json: the "
                "file was changed or damaged; rebuild the index",
            )
        # the codes stay in the file's pages (IO_FLAG_MMAP_IFC: read in place, not copied):
        # the index loads at once, and processes serving one version share its memory
        cpu = faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
        vectors = cpu.reconstruct_n(0, cpu.ntotal) if meta["kind"] == "flat" else None
        _touch(cpu)
        index, gpu = to_search_device(cpu, meta["kind"], use_gpu=use_gpu)
        return cls(
            index=index,
            item_idx=pl.read_parquet(folder / ROWS_FILE)["item_idx"].to_numpy(),
            kind=meta["kind"],
            params=meta["params"],
            recall=meta["recall"],
            recall_k=meta["recall_k"],
            on_gpu=gpu,
            vectors=vectors,
        )
