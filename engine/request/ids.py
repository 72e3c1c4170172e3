"""A vocabulary's ids and indices as two arrays, for the ids a request names: its user, the
items it excludes or sends as a history, and the items it answers with. A Python dict of a
million ids costs ~0.3 s to build and ~100 MB that no other process can share; these arrays
are stored in the version and memory-mapped, and a lookup is one binary search.

Ids are kept as fixed-width UTF-8 bytes (numpy `S`): the width is the longest id's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipelines.encode import OOV, Vocabulary


def _fixed_width(values: pl.Series) -> np.ndarray:
    """UTF-8 bytes of each string as one fixed-width `S` array (built from the Arrow
    buffers, without a Python string per value)."""
    arrow = values.cast(pl.String).to_arrow().cast("large_string")
    if arrow.null_count:
        raise ValueError("an id vocabulary holds no nulls")
    offsets_buf, data_buf = arrow.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, np.int64)[arrow.offset : arrow.offset + len(arrow) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(arrow), width), np.uint8)
    row = np.repeat(np.arange(len(arrow)), lengths)
    col = np.arange(len(row)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[row, col] = data[offsets[0] : offsets[-1]]
    return out.view(f"S{width}").ravel()


@dataclass(frozen=True)
class IdIndex:
    """ids <-> indices of one vocabulary (index 0, the OOV row, has no id)."""

    by_index: np.ndarray  # (size,) S: the id of each index; row 0 empty
    ordered: np.ndarray  # (size - 1,) S: the ids, sorted
    index: np.ndarray  # (size - 1,) int64: the index of each sorted id

    @classmethod
    def build(cls, vocab: Vocabulary) -> IdIndex:
        ids = _fixed_width(vocab.values)
        order = np.argsort(ids, kind="stable")
        return cls(np.r_[np.zeros(1, ids.dtype), ids], ids[order], (order + 1).astype(np.int64))

    def __len__(self) -> int:
        return len(self.ordered)

    def get(self, value: str) -> int | None:
        """The index of `value`, None for an id the vocabulary does not hold."""
        key = value.encode()
        if len(key) > self.ordered.dtype.itemsize or key.endswith(b"\0"):
            return None  # longer than every id, or unrepresentable: unknown
        at = int(np.searchsorted(self.ordered, key))
        if at < len(self.ordered) and self.ordered[at] == key:
            return int(self.index[at])
        return None

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.get(value) is not None

    def known(self, values: Iterable[str]) -> list[int]:
        """The indices of the `values` the vocabulary holds, in their order (unknown ones
        left out)."""
        return [i for i in map(self.get, values) if i is not None]

    def id_of(self, index: int) -> str:
        """The id of a known index."""
        if not OOV < index < len(self.by_index):
            raise KeyError(index)
        return bytes(self.by_index[index]).decode()

    def ids(self) -> list[str]:
        """Every id, by index."""
        return [bytes(b).decode() for b in self.by_index[1:]]
