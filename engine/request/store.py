"""What the nightly stores in a version for the request path, so that a served version maps
it instead of building it while it loads (or, worse, while it answers): the request tables
(`RequestTables`: the content neighbours among them, a vector search per item), the id
lookups, the item table, the vectors by index, and the item-to-item models' weights with
their user x item matrix (a fit over the whole catalogue). Every array is a `.npy` file (no
pickle) read as a memory map: processes serving one version share its pages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import scipy.sparse as sp

from engine.candidates import CandidateContext, CandidateSource, ModelContext
from engine.candidates.collaborative import (
    EaseSource,
    ItemItemSource,
    KnnSource,
    user_items_of,
)
from engine.candidates.itemitem import ItemItem
from engine.candidates.vectors import ContentSource
from engine.request.ids import IdIndex
from engine.request.tables import Lookup, RequestTables, Rows
from pipelines.dataset import FeatureSet
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

CONTENT_FILE = Path("request") / "content_neighbours.arrow"


def _content(sources: list[CandidateSource]) -> ContentSource | None:
    return next((s for s in sources if isinstance(s, ContentSource)), None)


def load_content_neighbours(sources: list[CandidateSource], folder: Path) -> pl.DataFrame | None:
    """The content neighbours a version from before the request tables were stored kept
    (handed to its content source too; None where either is missing)."""
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


def _save_csr(out: Path, name: str, m: sp.spmatrix) -> None:
    m = sp.csr_matrix(m)
    for part in ("indptr", "indices", "data"):
        _save_array(out / f"{name}_{part}.npy", getattr(m, part))
    _save_array(out / f"{name}_shape.npy", np.array(m.shape, np.int64))


def _load_csr(src: Path, name: str) -> sp.csr_matrix | None:
    if not (src / f"{name}_indptr.npy").is_file():
        return None
    parts = [mapped(src / f"{name}_{p}.npy") for p in ("data", "indices", "indptr")]
    shape = tuple(int(v) for v in np.load(src / f"{name}_shape.npy"))
    return sp.csr_matrix(tuple(parts), shape=shape, copy=False)


USER_ITEMS = "user_items"


def save_item_item(ctx: CandidateContext, folder: Path) -> list[str]:
    """Write the weights of the item-to-item models the lists used, and the user x item
    matrix they score users from (names of the models written)."""
    out = Path(folder) / "request"
    written = []
    for name in ITEM_ITEM:
        model = ctx.cache.item_item(name).built
        if model is None:
            continue
        w = model.weights
        if sp.issparse(w):
            _save_csr(out, name, w)
        else:
            _save_array(out / f"{name}_weights.npy", w)
            if model.keep is not None:
                _save_array(out / f"{name}_keep.npy", model.keep)
        written.append(name)
    if written:
        _save_csr(out, USER_ITEMS, user_items_of(ctx))
    return written


def load_item_item(ctx: CandidateContext, folder: Path) -> list[str]:
    """Hand the version's stored item-to-item weights (and their user x item matrix) to
    `ctx` (memory-mapped: processes serving one version share the pages), so that no model is
    fitted and no matrix built at load."""
    src = Path(folder) / "request"
    history = _load_csr(src, USER_ITEMS)
    if history is not None:
        ctx.cache.user_items.get(lambda: history)
    loaded = []
    for name in ITEM_ITEM:
        keep = None
        if (src / f"{name}_weights.npy").is_file():
            weights: np.ndarray | sp.csr_matrix | None = mapped(src / f"{name}_weights.npy")
            keep_file = src / f"{name}_keep.npy"
            keep = np.load(keep_file, allow_pickle=False) if keep_file.is_file() else None
        else:
            weights = _load_csr(src, name)
        if weights is None:
            continue
        ctx.cache.item_item(name).get(_stored_model(ctx, weights, keep))
        loaded.append(name)
    return loaded


def _stored_model(
    ctx: CandidateContext, weights: np.ndarray | sp.csr_matrix, keep: np.ndarray | None
) -> Callable[[], ItemItem]:
    """The item-to-item model of stored `weights` over the context's user x item matrix."""
    return lambda: ItemItem(user_items_of(ctx), weights, keep)


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


TABLES = Path("request") / "tables"
TABLES_META = "tables.json"
ITEM_ITEM_SOURCES: dict[str, type[ItemItemSource]] = {
    EaseSource.name: EaseSource,
    KnnSource.name: KnnSource,
}
_NAME = re.compile(r"[A-Za-z0-9_]+")


def _part(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot name a stored request table")
    return name


def save_tables(t: RequestTables, folder: Path) -> int:
    """Write every array of `t` into the version (one .npy each, beside a JSON of their
    layout), so that a served version maps them instead of building them; files written."""
    out = Path(folder) / TABLES
    rows: dict[str, list[str] | None] = {}
    lookups: dict[str, dict[str, object]] = {}
    meta: dict[str, object] = {
        "names": t.names,
        "key_width": t.key_width,
        "counts": t.counts,
        "rows": rows,
        "lookups": lookups,
    }
    arrays: dict[str, np.ndarray] = {}
    for f in fields(t):
        value = getattr(t, f.name)
        if isinstance(value, Rows) or (value is None and f.type.startswith("Rows")):
            rows[f.name] = None if value is None else list(value.cols)
            if value is not None:
                arrays[f"{f.name}.indptr"] = value.indptr
                arrays |= {f"{f.name}.{_part(c)}": a for c, a in value.cols.items()}
        elif isinstance(value, Lookup):
            lookups[f.name] = {"width": value.width, "cols": list(value.cols)}
            arrays[f"{f.name}.pairs"] = value.pairs
            arrays |= {f"{f.name}.{_part(c)}": a for c, a in value.cols.items()}
    meta["items"], meta["user_stats"] = list(t.items), list(t.user_stats)
    arrays |= {f"items.{_part(c)}": a for c, a in t.items.items()}
    arrays |= {f"user_stats.{_part(c)}": a for c, a in t.user_stats.items()}
    meta["cold"] = t.cold_warm is not None
    if t.cold_warm is not None and t.cold_overall is not None:
        arrays["cold_warm"] = t.cold_warm
        arrays["cold_overall.items"], arrays["cold_overall.share"] = t.cold_overall
    for name, array in arrays.items():
        _save_array(out / f"{name}.npy", array)
    with atomic_path(out / TABLES_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return len(arrays) + 1


def has_tables(folder: Path) -> bool:
    """Whether the version stored its request tables (one from before they were stored
    builds them from its sources instead)."""
    return (Path(folder) / TABLES / TABLES_META).is_file()


def load_tables(ctx: ModelContext, folder: Path) -> RequestTables:
    """The request tables the version stored, memory-mapped, over `ctx`."""
    src = Path(folder) / TABLES
    meta = json.loads((src / TABLES_META).read_text())

    def arr(name: str) -> np.ndarray:
        return mapped(src / f"{name}.npy")

    rows: dict[str, Rows | None] = {
        k: None
        if cols is None
        else Rows(arr(f"{k}.indptr"), {c: arr(f"{k}.{_part(c)}") for c in cols})
        for k, cols in meta["rows"].items()
    }

    def present(name: str) -> Rows:
        got = rows[name]
        if got is None:
            raise ArtifactError(src / TABLES_META, f"the {name} rows are missing")
        return got

    lookups: dict[str, Lookup] = {
        k: Lookup(
            arr(f"{k}.pairs"), int(v["width"]), {c: arr(f"{k}.{_part(c)}") for c in v["cols"]}
        )
        for k, v in meta["lookups"].items()
    }
    names = list(meta["names"])
    return RequestTables(
        ctx=ctx,
        names=names,
        item_item={n: ITEM_ITEM_SOURCES[n](ctx) for n in names if n in ITEM_ITEM_SOURCES},
        history=present("history"),
        seen=present("seen"),
        covisit=rows["covisit"],
        transitions=rows["transitions"],
        content=rows["content"],
        trending=rows["trending"],
        top_categories=rows["top_categories"],
        cold_tokens=rows["cold_tokens"],
        cold_per_token=rows["cold_per_token"],
        affinity=lookups["affinity"],
        brands=lookups["brands"],
        leaves=lookups["leaves"],
        categories=lookups["categories"],
        pairs=lookups["pairs"],
        items={c: arr(f"items.{_part(c)}") for c in meta["items"]},
        user_stats={c: arr(f"user_stats.{_part(c)}") for c in meta["user_stats"]},
        cold_warm=arr("cold_warm") if meta["cold"] else None,
        cold_overall=(arr("cold_overall.items"), arr("cold_overall.share"))
        if meta["cold"]
        else None,
        key_width={k: int(v) for k, v in meta["key_width"].items()},
        counts=list(meta["counts"]),
    )


IDS = Path("request") / "ids"
ID_VOCABS = ("user", "item", "user_attr")
"""The vocabularies a request names ids of: its user, its items, its user features."""


def save_ids(fs: FeatureSet, folder: Path) -> None:
    """Store each request vocabulary's id arrays (`IdIndex`) in the version."""
    for name in ID_VOCABS:
        ids = IdIndex.build(getattr(fs.vocabs, name))
        for part in ("by_index", "ordered", "index"):
            _save_array(Path(folder) / IDS / f"{name}.{part}.npy", getattr(ids, part))


def load_ids(fs: FeatureSet, folder: Path) -> dict[str, IdIndex]:
    """The version's id arrays by vocabulary, memory-mapped (built from `fs` for a version
    that did not store them)."""
    src = Path(folder) / IDS
    out = {}
    for name in ID_VOCABS:
        paths = [src / f"{name}.{part}.npy" for part in ("by_index", "ordered", "index")]
        out[name] = (
            IdIndex(*(mapped(p) for p in paths))
            if all(p.is_file() for p in paths)
            else IdIndex.build(getattr(fs.vocabs, name))
        )
    return out


ITEMS_FILE = Path("request") / "items.arrow"
"""The feature set's item table as uncompressed Arrow IPC: a served version maps it (its
only frame: eligibility, the rules' facts and the request filters read it), where decoding
the Parquet copy would give every process its own ~200 MB at a million items."""


def save_items(fs: FeatureSet, folder: Path) -> None:
    with atomic_path(Path(folder) / ITEMS_FILE) as tmp:
        fs.stored("items").write_ipc(tmp, compression="uncompressed")


def load_served_features(folder: Path) -> FeatureSet:
    """The version's feature set as a served version reads it: its vocabularies and its
    items, mapped from `ITEMS_FILE` (zero-copy Arrow), every other frame empty."""
    path = Path(folder) / ITEMS_FILE
    if not path.is_file():
        return FeatureSet.load(folder, only=("items",))
    items = pl.from_arrow(pa_ipc.open_file(pa.memory_map(str(path))).read_all())
    if not isinstance(items, pl.DataFrame):  # an Arrow table reads as a frame
        raise ArtifactError(path, "not an item table")
    return replace(FeatureSet.load(folder, only=()), items=items)
