"""A FAISS index over item vectors with the filters recommendation needs.

Rows of the FAISS index are positions 0..n-1; `item_idx[row]` maps them back to item indices.
Two kinds of exclusion, each applied where it is cheapest:

* global (`allowed`, a mask over rows: unavailable items, ads out of flight) goes into the
  search itself as a FAISS `IDSelectorBitmap` on CPU, so excluded items cost nothing and
  never take a slot; on GPU, where selectors are not supported, it joins the per-query path;
* per query (`exclude`, the items a user has consumed) is over-fetch + filter: ask for
  k + (longest exclusion list) and drop hits in the list; a query that still comes up short
  (a selector-less GPU search with many blocked rows) is searched again deeper.

Result: (scores, items) of shape (Q, k), best first; -1 / -inf pad rows with fewer than k
eligible items.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from engine.index.faiss_device import to_cpu, to_search_device
from pipelines.errors import DataError
from pipelines.io import atomic_path, write_parquet

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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ItemIndex:
    """A built or loaded index and what is known about it."""

    index: faiss.Index
    item_idx: np.ndarray                     # (n,) item index of each row
    kind: str
    params: dict[str, int | float] = field(default_factory=dict)
    recall: float | None = None              # measured recall@recall_k against exact search
    recall_k: int | None = None
    on_gpu: bool = False
    vectors: np.ndarray | None = None        # kept for the exact kind's numpy path

    def __post_init__(self) -> None:
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
            faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", int(self.params["nprobe"]))
        if "ef_search" in self.params:
            faiss.ParameterSpace().set_index_parameter(self.index, "efSearch",
                                                       int(self.params["ef_search"]))

    def set_param(self, name: str, value: int) -> None:
        self.params[name] = value
        self._apply_params()

    # ----------------------------------------------------------------- search
    def _raw(self, queries: np.ndarray, depth: int, allowed: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
        depth = min(depth, self.size)
        if self.vectors is not None and len(queries) <= SINGLE_QUERY_MAX and allowed is None:
            rows = exact_top_k(queries, self.vectors, depth)
            return np.take_along_axis(queries @ self.vectors.T, rows, axis=1), rows
        params = None
        if allowed is not None and not self.on_gpu:
            bits = np.packbits(allowed, bitorder="little")  # must outlive the search
            sel = faiss.IDSelectorBitmap(bits)
            if "nprobe" in self.params:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=int(self.params["nprobe"]))
            elif "ef_search" in self.params:
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=int(self.params["ef_search"]))
            else:
                params = faiss.SearchParameters(sel=sel)
        scores, rows = self.index.search(queries, depth, params=params)
        del params  # the selector (and its bitmap) only had to live through the search
        return scores, rows

    def search(self, queries: np.ndarray, k: int, *, exclude: list[np.ndarray] | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query (Q, D) float32, never returning an item in that query's
        `exclude` (item indices) nor a row where `allowed` (bool, by item index) is False."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        q = len(queries)
        allowed_rows = None if allowed is None else np.asarray(allowed, bool)[self.item_idx]
        if allowed_rows is not None and allowed_rows.all():
            allowed_rows = None
        blocked = [self.rows_of(e) for e in exclude] if exclude is not None else [
            np.empty(0, np.int64)] * q
        blocked = [b[b >= 0] for b in blocked]
        if allowed_rows is not None and self.on_gpu:  # no selectors there: filter after
            off = np.flatnonzero(~allowed_rows)
            blocked = [np.union1d(b, off) for b in blocked]
            allowed_rows = None
        if allowed_rows is not None and self.vectors is not None and q <= SINGLE_QUERY_MAX:
            # numpy path for a few queries: fold the mask into the per-query exclusions
            off = np.flatnonzero(~allowed_rows)
            blocked = [np.union1d(b, off) for b in blocked]
            allowed_rows = None
        out_s = np.full((q, k), -np.inf, np.float32)
        out_i = np.full((q, k), -1, np.int64)
        todo = np.arange(q)
        extra = max((len(b) for b in blocked), default=0)
        depth = k + extra
        while len(todo):
            scores, rows = self._raw(queries[todo], depth, allowed_rows)
            keep = rows >= 0
            if extra:
                lengths = np.array([len(blocked[t]) for t in todo])
                flat = np.concatenate([blocked[t] for t in todo]) if lengths.sum() else \
                    np.empty(0, np.int64)
                owner = np.repeat(np.arange(len(todo)), lengths)
                bad = np.isin(np.arange(len(todo))[:, None] * (self.size + 1) + rows,
                              owner * (self.size + 1) + flat)
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
        meta = {"kind": self.kind, "params": self.params, "size": self.size,
                "recall": self.recall, "recall_k": self.recall_k,
                "sha256": sha256(folder / INDEX_FILE)}
        with atomic_path(folder / META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return meta

    @classmethod
    def load(cls, folder: Path, *, use_gpu: bool = True) -> ItemIndex:
        """Read an index written by `save`, refusing one whose file does not match its
        recorded checksum."""
        folder = Path(folder)
        for name in (INDEX_FILE, META_FILE, ROWS_FILE):
            if not (folder / name).is_file():
                raise DataError(folder / name, "index file missing")
        meta = json.loads((folder / META_FILE).read_text())
        if sha256(folder / INDEX_FILE) != meta["sha256"]:
            raise DataError(folder / INDEX_FILE, "checksum does not match index.json: the "
                                                 "file was changed or damaged; rebuild the index")
        cpu = faiss.read_index(str(folder / INDEX_FILE))
        vectors = cpu.reconstruct_n(0, cpu.ntotal) if meta["kind"] == "flat" else None
        index, gpu = to_search_device(cpu, meta["kind"], use_gpu=use_gpu)
        return cls(index=index, item_idx=pl.read_parquet(folder / ROWS_FILE)["item_idx"].to_numpy(),
                   kind=meta["kind"], params=meta["params"], recall=meta["recall"],
                   recall_k=meta["recall_k"], on_gpu=gpu, vectors=vectors)
