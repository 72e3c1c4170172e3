"""What the nightly stores in a version for the request path: the content neighbours of every
item a known user's request starts from. They take a vector search per item (an IVF search at
a million items), which the lists stage has just done for every user; a served version reads
them back instead of searching again while it loads or, worse, while it answers."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from engine.candidates import CandidateSource
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


def load_content_neighbours(sources: list[CandidateSource], folder: Path) -> None:
    """Hand the version's stored content neighbours to its content source (if both exist)."""
    source, path = _content(sources), Path(folder) / CONTENT_FILE
    if source is not None and path.is_file():
        source.preload(pl.read_ipc(path))
