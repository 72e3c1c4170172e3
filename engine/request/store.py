"""What the nightly stores in a version for the request path, so that a served version reads
it instead of computing it again while it loads or, worse, while it answers: the content
neighbours of every item a known user's request starts from (a vector search per item, an IVF
search at a million items, which the lists stage has just done for every user), and the
item-to-item models' weights (a fit over the whole catalogue)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.candidates import CandidateContext, CandidateSource
from engine.candidates.collaborative import user_items_of
from engine.candidates.itemitem import ItemItem
from engine.candidates.vectors import ContentSource
from pipelines.io import atomic_path

CONTENT_FILE = Path("request") / "content_neighbours.arrow"


def _content(sources: list[CandidateSource]) -> ContentSource | None:
    return next((s for s in sources if isinstance(s, ContentSource)), None)


def save_content_neighbours(sources: list[CandidateSource], folder: Path) -> int:
    """Write the content source's searched neighbours into the version; rows written."""
    source = _content(sources)
    if source is None:
        return 0
    table = source.neighbours(source.searched())
    with atomic_path(Path(folder) / CONTENT_FILE) as tmp:
        table.write_ipc(tmp, compression="uncompressed")
    return table.height


def load_content_neighbours(sources: list[CandidateSource], folder: Path
                            ) -> pl.DataFrame | None:
    """The version's stored content neighbours, handed to its content source too (None
    where either is missing)."""
    source, path = _content(sources), Path(folder) / CONTENT_FILE
    if source is None or not path.is_file():
        return None
    table = pl.read_ipc(path)
    source.preload(table)
    return table


ITEM_ITEM = ("ease", "knn")
"""The item-to-item models a version stores (their weights took a fit over the whole
catalogue: about 10 s for item-kNN at a million items, 40 s for EASE at 18k)."""


PAGE = 4096


def mapped(path: Path) -> np.ndarray:
    """A stored array as a read-only memory map with every page mapped in now (one byte read
    per page): processes serving one version share the pages, and no request pays a page
    fault on its first touch of an item's row."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.size:
        array.reshape(-1).view(np.uint8)[::PAGE].sum()
    return np.asarray(array)  # a plain view: np.memmap's indexing costs ~45 us a call


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def save_item_item(ctx: CandidateContext, folder: Path) -> list[str]:
    """Write the weights of the item-to-item models the lists used (names written)."""
    out = Path(folder) / "request"
    written = []
    for name in ITEM_ITEM:
        model = ctx.cache.get(name)
        if not isinstance(model, ItemItem):
            continue
        w = model.weights
        if sp.issparse(w):
            w = sp.csr_matrix(w)
            for part in ("indptr", "indices", "data"):
                _save_array(out / f"{name}_{part}.npy", getattr(w, part))
            _save_array(out / f"{name}_shape.npy", np.array(w.shape, np.int64))
        else:
            _save_array(out / f"{name}_weights.npy", w)
            if model.keep is not None:
                _save_array(out / f"{name}_keep.npy", model.keep)
        written.append(name)
    return written


def load_item_item(ctx: CandidateContext, folder: Path) -> list[str]:
    """Hand the version's stored item-to-item weights to `ctx` (memory-mapped: processes
    serving one version share the pages), so that no model is fitted at load."""
    src = Path(folder) / "request"
    loaded = []
    for name in ITEM_ITEM:
        if (src / f"{name}_weights.npy").is_file():
            weights: np.ndarray | sp.csr_matrix = mapped(src / f"{name}_weights.npy")
            keep_file = src / f"{name}_keep.npy"
            keep = np.load(keep_file, allow_pickle=False) if keep_file.is_file() else None
        elif (src / f"{name}_indptr.npy").is_file():
            parts = [mapped(src / f"{name}_{p}.npy") for p in ("data", "indices", "indptr")]
            shape = tuple(int(v) for v in np.load(src / f"{name}_shape.npy"))
            weights, keep = sp.csr_matrix(tuple(parts), shape=shape, copy=False), None
        else:
            continue
        ctx.once(name, lambda w=weights, k=keep: ItemItem(user_items_of(ctx), w, k))
        loaded.append(name)
    return loaded


VECTORS = ("items", "content", "users")
"""The dense vector arrays by index (`version.dense_vectors`) a version stores beside the
exported Parquet files: read at load as memory maps instead of decoding list columns."""


def save_vectors(folder: Path, ctx: CandidateContext) -> None:
    """Store the context's vectors by index (a version's context always has all three)."""
    arrays = (ctx.item_vectors, ctx.content_vectors, ctx.user_vectors)
    for name, array in zip(VECTORS, arrays, strict=True):
        if array is None:
            raise ValueError(f"the version's {name} vectors are missing")
        _save_array(Path(folder) / "request" / f"{name}_vectors.npy", array)


def load_vectors_mapped(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(item, content, user) vectors of a version that stored them, memory-mapped; None for
    one that did not."""
    paths = [Path(folder) / "request" / f"{n}_vectors.npy" for n in VECTORS]
    if not all(p.is_file() for p in paths):
        return None
    item, content, user = (mapped(p) for p in paths)
    return item, content, user
