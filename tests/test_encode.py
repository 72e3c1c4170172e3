"""Vocabularies: contiguous indices, OOV for unknown ids, Parquet round trip."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.encode import OOV, Vocabulary
from pipelines.errors import ArtifactError


def test_indices_are_contiguous_from_one_and_unknown_is_oov() -> None:
    v = Vocabulary.fit("item", pl.Series(["b", "a", "c", "b"]))
    assert v.size == 4
    assert v.encode_series(pl.Series(["a", "b", "c"])).to_list() == [1, 2, 3]
    assert v.encode_series(pl.Series(["zzz", None])).to_list() == [OOV, OOV]


def test_integer_ids_encode_like_their_text() -> None:
    v = Vocabulary.fit("user", pl.Series([10, 2, 33]))
    assert (
        v.encode_series(pl.Series(["2", "10"])).to_list()
        == v.encode_series(pl.Series([2, 10])).to_list()
    )


def test_round_trip_keeps_every_index(tmp_path: Path) -> None:
    v = Vocabulary.fit("item", pl.Series([f"i{k}" for k in range(50)]))
    v.save(tmp_path)
    back = Vocabulary.load(tmp_path, "item")
    ids = pl.Series([f"i{k}" for k in range(50)] + ["new"])
    assert back.encode_series(ids).to_list() == v.encode_series(ids).to_list()
    assert back.decode(pl.Series([0, 1])).to_list() == [None, v.values[0]]


def test_new_data_reuses_the_saved_vocabulary(tmp_path: Path) -> None:
    Vocabulary.fit("item", pl.Series(["a", "b"])).save(tmp_path)
    v = Vocabulary.load(tmp_path, "item")
    df = pl.DataFrame({"item_id": ["b", "c", "a"]}).with_columns(
        v.encode(pl.col("item_id")).alias("idx")
    )
    assert df["idx"].to_list() == [2, OOV, 1]


def test_capped_vocabulary_keeps_the_most_frequent() -> None:
    v = Vocabulary.fit("token", pl.Series(list("aaabbbbcd")), max_size=2)
    assert sorted(v.values.to_list()) == ["a", "b"]
    v = Vocabulary.fit("token", pl.Series(list("aaabbbbcd")), min_count=2)
    assert sorted(v.values.to_list()) == ["a", "b"]


def test_list_columns_encode_elementwise() -> None:
    v = Vocabulary.fit("token", pl.Series(["red", "shoe"]))
    out = pl.DataFrame({"t": [["red", "hat"], [], None]}).select(v.encode_list(pl.col("t")))
    assert out["t"].to_list() == [[1, 0], [], None]


def test_a_file_that_is_not_a_vocabulary_is_refused(tmp_path: Path) -> None:
    pl.DataFrame({"index": [2, 3], "value": ["a", "b"]}).write_parquet(tmp_path / "item.parquet")
    with pytest.raises(ArtifactError, match="not a recengine vocabulary"):
        Vocabulary.load(tmp_path, "item")
    with pytest.raises(ArtifactError, match="not found"):
        Vocabulary.load(tmp_path, "user")


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=40))
def test_encode_then_decode_is_identity(values: list[str]) -> None:
    v = Vocabulary.fit("x", pl.Series(values))
    idx = v.encode_series(pl.Series(values))
    assert idx.min() >= 1 and idx.max() <= len(set(values))
    assert v.decode(idx).to_list() == values
