"""Reading a built version back: the dense vectors by index and the candidate context over
them. The nightly job's list stage and the online API both start here, so a list built in the
batch and one built online come from the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embeddings.export import ITEMS, USERS, load_vectors
from engine.candidates import CandidatesConfig, ModelContext
from engine.index import ItemIndex
from pipelines.dataset import FeatureSet


def dense_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item, content, user) vectors of the version in `folder`, as arrays by index (row 0,
    the OOV index, stays zero); memory-mapped where the version stored them so."""
    from engine.request.store import (
        load_vectors_mapped,  # the store reads candidate sources
    )

    mapped = load_vectors_mapped(folder)
    if mapped is not None:
        return mapped
    items = load_vectors(Path(folder) / "embeddings" / ITEMS)
    users = load_vectors(Path(folder) / "embeddings" / USERS)
    iv = np.zeros((int(items.index.max()) + 1, items.matrix.shape[1]), np.float32)
    cv = np.zeros_like(iv)
    uv = np.zeros((int(users.index.max()) + 1, users.matrix.shape[1]), np.float32)
    iv[items.index], uv[users.index] = items.matrix, users.matrix
    if items.content is not None:
        cv[items.index] = items.content
    return iv, cv, uv


def version_context(
    folder: Path,
    fs: FeatureSet,
    cfg: CandidatesConfig,
    *,
    use_gpu: bool = True,
    checked: bool = False,
) -> ModelContext:
    """The candidate context of the version in `folder`: its vectors and its item index
    (`checked`: every file was just verified against the manifest)."""
    iv, cv, uv = dense_vectors(folder)
    index = ItemIndex.load(Path(folder) / "index", use_gpu=use_gpu, checked=checked)
    return ModelContext.of(
        fs, cfg, user_vectors=uv, index=index, content_vectors=cv, item_vectors=iv
    )


def full_context(folder: Path, cfg: CandidatesConfig) -> ModelContext:
    """The version's candidate context over its whole feature set, with the item-to-item
    models it stored: what the frame path reads (the training reference). A served version
    reads only its items (`serving.state`), so comparisons against the frames start here."""
    from engine.request.store import load_item_item  # the store reads candidate sources

    ctx = version_context(folder, FeatureSet.load(folder), cfg, use_gpu=False, checked=True)
    load_item_item(ctx, folder)
    return ctx
