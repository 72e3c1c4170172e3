"""MovieLens import: format detection, contract tables and a config that loads, on tiny fixtures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from pipelines.config import load_config
from pipelines.errors import DataError
from pipelines.movielens import import_movielens

KNOWN_TS = 874965758  # 1997-09-22 22:02:38 UTC
KNOWN_DT = datetime(1997, 9, 22, 22, 2, 38)


def _flags(*genres: int) -> str:
    """The 19 genre 0/1 flags of u.item with the given positions set."""
    return "|".join("1" if i in genres else "0" for i in range(19))


def _write(folder: Path, files: dict[str, str], encoding: str = "latin-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def _ml_100k(tmp: Path) -> Path:
    return _write(
        tmp / "ml-100k",
        {
            "u.data": (
                f"196\t242\t3\t{KNOWN_TS}\n"
                "186\t302\t5\t891717742\n"
                "22\t377\t1\t878887116\n"
                "196\t302\t4\t881250949\n"
                "22\t242\t2\t875747190\n\n"
            ),
            "u.item": (
                f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags(5)}\n"
                f"302|Café (1997)|01-Jan-1997||http://y|{_flags(8, 16)}\n"
                f"377|unknown|||http://z|{_flags(0)}\n"
            ),
            "u.user": ("196|49|M|writer|55105\n186|39|F|executive|00000\n22|17|M|student|40206\n"),
        },
    )


def _ml_1m(tmp: Path) -> Path:
    return _write(
        tmp / "ml-1m",
        {
            "ratings.dat": (
                f"1::1193::5::{KNOWN_TS}\n"
                "1::661::3::978302109\n"
                "2::1193::4::978298413\n"
                "3::3408::4::978300275\n"
            ),
            "movies.dat": (
                "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                "3408::Café Society (1995)::Comedy|Romance\n"
            ),
            "users.dat": ("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"),
        },
    )


def _ml_latest(tmp: Path) -> Path:
    return _write(
        tmp / "ml-latest-small",
        {
            "ratings.csv": (
                "userId,movieId,rating,timestamp\n"
                f"1,1,4.0,{KNOWN_TS}\n"
                "1,11,3.5,964981247\n"
                "7,1,5.0,964982224\n"
                "7,2,2.5,964983815\n"
            ),
            "movies.csv": (
                "movieId,title,genres\n"
                "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                "2,Naïve Film (2018),(no genres listed)\n"
            ),
        },
        encoding="utf-8",
    )


def _tables(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return (
        pl.read_parquet(out / "interactions.parquet"),
        pl.read_parquet(out / "items.parquet"),
        pl.read_parquet(out / "users.parquet"),
    )


def _check_common(out: Path, inter: pl.DataFrame, items: pl.DataFrame) -> None:
    assert inter.schema == pl.Schema(
        {
            "user_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us"),
            "event": pl.String,
            "value": pl.Float64,
        }
    )
    assert inter["event"].unique().to_list() == ["rating"]
    assert items.schema["tags"] == pl.List(pl.String)
    assert items["kind"].unique().to_list() == ["product"]
    assert items["available"].all()
    cfg = load_config(out / "config.toml")
    assert cfg.split.strategy == "holdout"  # raters are bursty: a per-user holdout
    assert cfg.split.holdout_share == 0.2
    assert cfg.data.interactions == (out / "interactions.parquet").resolve()


def _row(df: pl.DataFrame, col: str, value: str) -> dict:
    return df.filter(pl.col(col) == value).row(0, named=True)


def test_100k(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = import_movielens(_ml_100k(tmp_path), out)
    assert (summary.format, summary.n_users, summary.n_items, summary.n_interactions) == (
        "100k",
        3,
        3,
        5,
    )
    assert summary.config == out / "config.toml"
    inter, items, users = _tables(out)
    _check_common(out, inter, items)
    first = inter.row(0, named=True)
    assert (first["user_id"], first["item_id"], first["ts"], first["value"]) == (
        "196",
        "242",
        KNOWN_DT,
        3.0,
    )
    cafe = _row(items, "item_id", "302")
    assert cafe["title"] == "Café (1997)"
    assert (cafe["category"], cafe["tags"]) == ("Drama", ["Drama", "Thriller"])
    unknown = _row(items, "item_id", "377")
    assert (unknown["category"], unknown["tags"]) == (None, [])
    assert users.columns == ["user_id", "age_bucket", "gender", "occupation"]
    assert _row(users, "user_id", "196") == {
        "user_id": "196",
        "age_bucket": "45-49",
        "gender": "M",
        "occupation": "writer",
    }
    assert _row(users, "user_id", "22")["age_bucket"] == "<18"


def test_1m(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = import_movielens(_ml_1m(tmp_path), out)
    assert (summary.format, summary.n_users, summary.n_items, summary.n_interactions) == (
        "1m",
        3,
        3,
        4,
    )
    inter, items, users = _tables(out)
    _check_common(out, inter, items)
    assert _row(inter, "item_id", "1193")["ts"] == KNOWN_DT
    assert set(inter["user_id"]) == {"1", "2", "3"}
    peach = _row(items, "item_id", "661")
    assert (peach["category"], peach["tags"]) == (
        "Animation",
        ["Animation", "Children's", "Musical"],
    )
    assert _row(items, "item_id", "3408")["title"] == "Café Society (1995)"
    assert users.columns == ["user_id", "age_bucket", "gender", "occupation"]
    assert _row(users, "user_id", "2") == {
        "user_id": "2",
        "age_bucket": "56",
        "gender": "M",
        "occupation": "16",
    }


def test_latest_small(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = import_movielens(_ml_latest(tmp_path), out)
    assert (summary.format, summary.n_users, summary.n_items, summary.n_interactions) == (
        "latest-small",
        2,
        3,
        4,
    )
    inter, items, users = _tables(out)
    _check_common(out, inter, items)
    assert _row(inter, "item_id", "1")["ts"] == KNOWN_DT
    assert _row(inter, "item_id", "11")["value"] == 3.5
    president = _row(items, "item_id", "11")
    assert president["title"] == "American President, The (1995)"
    assert (president["category"], president["tags"]) == ("Comedy", ["Comedy", "Drama", "Romance"])
    naive = _row(items, "item_id", "2")
    assert (naive["title"], naive["category"], naive["tags"]) == ("Naïve Film (2018)", None, [])
    assert users.columns == ["user_id"]
    assert sorted(users["user_id"]) == ["1", "7"]


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MovieLens files found"):
        import_movielens(tmp_path, tmp_path / "out")


def test_missing_file_is_named(tmp_path: Path) -> None:
    src = _ml_1m(tmp_path)
    (src / "movies.dat").unlink()
    with pytest.raises(DataError, match=r"movies\.dat") as info:
        import_movielens(src, tmp_path / "out")
    assert info.value.file.endswith("movies.dat")
    assert not (tmp_path / "out").exists()
