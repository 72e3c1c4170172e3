"""Searching the index for every user of a batch job, in chunks, reporting progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from engine.index.item_index import ItemIndex


def search_all(
    index: ItemIndex,
    vectors: np.ndarray,
    k: int,
    *,
    exclude: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    allowed: np.ndarray | None = None,
    chunk: int = 4096,
    report: Callable[[int], None] = lambda _: None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, scores, items) for consecutive chunks of the query `vectors` (Q, D).

    `exclude(rows)` gives the items to leave out for those query rows (e.g. each user's seen
    items); `report(n)` is called with the number of queries done after each chunk. Memory
    stays at one chunk whatever Q is.
    """
    for a in range(0, len(vectors), chunk):
        rows = np.arange(a, min(a + chunk, len(vectors)))
        scores, items = index.search(
            vectors[rows],
            k,
            exclude=exclude(rows) if exclude is not None else None,
            allowed=allowed,
        )
        report(len(rows))
        yield rows, scores, items
