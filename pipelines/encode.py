"""Id -> contiguous index vocabularies, persisted as Parquet.

Index 0 is reserved for out-of-vocabulary (OOV) values, so embedding tables have one row per
known value plus one shared row for everything unseen; encoding new data with a saved vocabulary
sends unknown ids there instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines.errors import ArtifactError
from pipelines.io import write_parquet

OOV = 0
STORED_INDEX = pl.Int32
"""The dtype of indices as a vocabulary encodes them and as files store them (vocabularies,
feature tables, the served item table, the exported item vectors)."""
INDEX_DTYPE = pl.Int64
"""The dtype of user and item indices in memory: every `user_idx` and `item_idx` column (and a
history's item list) of a `FeatureSet`, set once where it is built or loaded
(`FeatureSet.__post_init__`), and so of every frame the engine derives from one. An index that
arrives in another dtype (a vocabulary's encoding, a source's numpy array) is cast to this."""


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """An ordered set of string values; value k (0-based) has index k + 1.

    Example:
        >>> v = Vocabulary.fit("item", pl.Series(["b", "a", "b"]))
        >>> v.encode_series(pl.Series(["a", "b", "zzz"])).to_list()
        [1, 2, 0]
    """

    name: str
    values: pl.Series  # String, unique

    @classmethod
    def fit(
        cls, name: str, values: pl.Series, *, max_size: int | None = None, min_count: int = 1
    ) -> Vocabulary:
        """Build from observed values. Without a size cap values are sorted (deterministic);
        with one, the most frequent `max_size` values are kept (ties broken by value)."""
        s = values.cast(pl.String).drop_nulls()
        if max_size is None and min_count <= 1:
            return cls(name, s.unique().sort().rename("value"))
        counts = s.value_counts(name="n").filter(pl.col("n") >= min_count)
        counts = counts.sort(["n", s.name], descending=[True, False])
        if max_size is not None:
            counts = counts.head(max_size)
        return cls(name, counts[s.name].sort().rename("value"))

    def extend(self, values: pl.Series) -> Vocabulary:
        """This vocabulary with the values it lacks appended (sorted): every known value keeps
        its index, so a model trained on this one still reads them right.

        Example:
            >>> Vocabulary.fit("item", pl.Series(["b", "a"])).extend(pl.Series(["c", "a"])).values.to_list()
            ['a', 'b', 'c']
        """
        new = values.cast(pl.String).drop_nulls().unique().sort()
        new = new.filter(~new.is_in(self.values.implode()))
        return Vocabulary(self.name, pl.concat([self.values, new.rename("value")]))

    @property
    def size(self) -> int:
        """Number of embedding rows needed: known values + the OOV row."""
        return len(self.values) + 1

    def encode(self, expr: pl.Expr) -> pl.Expr:
        """Expression mapping values to indices (unknown or null -> OOV)."""
        idx = pl.int_range(1, len(self.values) + 1, dtype=STORED_INDEX, eager=True)
        return expr.cast(pl.String).replace_strict(
            self.values, idx, default=OOV, return_dtype=STORED_INDEX
        )

    def encode_list(self, expr: pl.Expr) -> pl.Expr:
        """Same as `encode` for a list column (token bags)."""
        return expr.list.eval(self.encode(pl.element()))

    def encode_series(self, s: pl.Series) -> pl.Series:
        return pl.select(self.encode(pl.lit(s))).to_series().rename(s.name)

    def decode(self, indices: pl.Series) -> pl.Series:
        """Indices back to values (OOV -> null)."""
        table = pl.concat([pl.Series("value", [None], pl.String), self.values])
        return table.gather(indices.cast(pl.Int64)).rename(self.name)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "index": pl.int_range(1, len(self.values) + 1, dtype=STORED_INDEX, eager=True),
                "value": self.values,
            }
        )

    def save(self, folder: Path) -> Path:
        return write_parquet(self.to_frame(), Path(folder) / f"{self.name}.parquet")

    @classmethod
    def load(cls, folder: Path, name: str) -> Vocabulary:
        path = Path(folder) / f"{name}.parquet"
        if not path.is_file():
            raise ArtifactError(path, "vocabulary file not found")
        df = pl.read_parquet(path)
        expected = pl.int_range(1, df.height + 1, dtype=STORED_INDEX, eager=True)
        if df.columns != ["index", "value"] or not df["index"].equals(expected, check_names=False):
            raise ArtifactError(
                path, "not a recengine vocabulary (columns index, value; index 1..n)"
            )
        return cls(name, df["value"])
