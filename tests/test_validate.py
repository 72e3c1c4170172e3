"""Validation of the three input tables: a corpus of bad inputs (built here, in tmp_path) that
must each stop with a `DataError` naming the file, the column and the offending rows; valid CSV
and Parquet inputs that normalise to the contract's types; the CLI's `validate`, and its
`nightly`, which stops on every bad input with exit 1 and publishes nothing; and a
property-based check that random tables either give features or a `DataError`, nothing else."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from engine.cli import app
from pipelines.config import EVENTS, ColumnsConfig, DataConfig, PipelineConfig
from pipelines.dataset import build_features, require_windows
from pipelines.errors import DataError
from pipelines.validate import (
    Tables,
    validate_interactions,
    validate_items,
    validate_tables,
    validate_users,
)
from tests.conftest import tally

runner = CliRunner()
NAMES = ("interactions", "items", "users")
COLS = ColumnsConfig()
FUTURE = datetime.now() + timedelta(days=30)


def good_interactions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u3"],
            "item_id": ["i1", "i2", "ad1", "i1"],
            "ts": [
                datetime(2024, 1, 1, 10),
                datetime(2024, 1, 2),
                datetime(2024, 1, 3),
                datetime(2024, 1, 4, 12, 30),
            ],
            "event": ["view", "click", "impression", "purchase"],
            "value": [None, None, None, 19.5],
        }
    )


def good_items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": ["i1", "i2", "ad1"],
            "kind": ["product", "product", "ad"],
            "title": ["red shoe", "blue hat", "buy now"],
            "price": [10.0, 20.0, 5.0],
            "bid": [None, None, 0.3],
            "tags": [["a", "b"], [], None],
        }
    )


def good_users() -> pl.DataFrame:
    return pl.DataFrame({"user_id": ["u1", "u2", "u3"], "country": ["FR", "DE", None]})


GOOD = {"interactions": good_interactions, "items": good_items, "users": good_users}
Content = pl.DataFrame | bytes | str | None


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def write_tables(folder: Path, suffix: str = ".parquet", **tables: Content) -> DataConfig:
    """Write the good tables, replaced by `tables` (a frame, raw bytes/text, or None: no file).

    A name given as ``items_csv=...`` is written as ``items.csv`` whatever `suffix` says.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        ext, content = suffix, GOOD[name]()
        for key, value in tables.items():
            if key.split("_")[0] == name:
                ext = "." + key.split("_")[1] if "_" in key else suffix
                content = value
        path = folder / f"{name}{ext}"
        paths[name] = path
        if isinstance(content, pl.DataFrame) and ext == ".parquet":
            content.write_parquet(path)
        elif isinstance(content, pl.DataFrame):
            content.write_csv(path)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            path.write_bytes(content)
    return DataConfig(**paths)


def listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every path under `folder` with its size and modification time."""
    return sorted(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    )


# --- the corpus of bad inputs --------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad input: `content` replaces one table; the error must name `file` and `column` and
    contain every string of `shows` (an offending id, or words of the message)."""

    id: str
    table: str
    content: Callable[[], Content]
    column: str | None = None
    shows: tuple[str, ...] = ()
    file: str | None = None  # the file named, when not the table replaced


def inter(**changes: list[object]) -> Callable[[], pl.DataFrame]:
    return lambda: good_interactions().with_columns(
        pl.Series(k, v, strict=False) for k, v in changes.items()
    )


def items_with(**changes: list[object]) -> Callable[[], pl.DataFrame]:
    return lambda: good_items().with_columns(
        pl.Series(k, v, strict=False) for k, v in changes.items()
    )


def truncated() -> bytes:
    big = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(2000)],
            "item_id": ["i1"] * 2000,
            "ts": [datetime(2024, 1, 1)] * 2000,
        }
    )
    data = parquet_bytes(big)
    return data[: len(data) // 2]


CSV_HEAD = "user_id,item_id,ts,event\n"
BAD = [
    Bad("missing file", "items", lambda: None, shows=("file not found",)),
    Bad("empty file", "users", lambda: b"", shows=("file is empty",)),
    Bad("empty csv", "users_csv", lambda: b"", shows=("file is empty",)),
    Bad("header but no rows (csv)", "interactions_csv", lambda: CSV_HEAD, shows=("no rows",)),
    Bad("header but no rows (parquet)", "items", lambda: good_items().clear(), shows=("no rows",)),
    Bad("truncated parquet", "interactions", truncated, shows=("cannot be read as Parquet",)),
    Bad(
        "not parquet at all", "items", lambda: "item_id\n1\n", shows=("cannot be read as Parquet",)
    ),
    Bad(
        "ragged csv row",
        "interactions_csv",
        lambda: CSV_HEAD + "u1,i1,1700000000,view\nu2,i2,1700000000,view,extra,fields\n",
        shows=("cannot be read as CSV",),
    ),
    Bad(
        "non-utf8 csv",
        "items_csv",
        lambda: b"item_id,title\ni1,caf\xe9 cr\xe8me\n",
        shows=("cannot be read as CSV", "utf-8"),
    ),
    Bad(
        "non-utf8 csv header",
        "users_csv",
        lambda: b"user_id,pa\xefs\nu1,FR\nu2,DE\nu3,IT\n",
        shows=("cannot be read as CSV", "utf-8"),
    ),
    Bad(
        "column named row",
        "users",
        lambda: good_users().with_columns(row=pl.lit(1)),
        column="row",
        shows=("reserved",),
    ),
    Bad(
        "missing required column",
        "interactions",
        lambda: good_interactions().drop("ts"),
        column="ts",
        shows=("required column", "'ts'"),
    ),
    Bad(
        "missing item_id",
        "items",
        lambda: good_items().drop("item_id"),
        column="item_id",
        shows=("required column",),
    ),
    Bad(
        "float item ids",
        "interactions",
        inter(item_id=[1.0, 2.0, 3.0, 1.0]),
        column="item_id",
        shows=("Float64",),
    ),
    Bad(
        "boolean ts",
        "interactions",
        inter(ts=[True, False, True, True]),
        column="ts",
        shows=("Boolean",),
    ),
    Bad(
        "float ts",
        "interactions",
        inter(ts=[1.7e9, 1.7e9, 1.7e9, 1.7e9]),
        column="ts",
        shows=("Float64",),
    ),
    Bad(
        "null user id",
        "interactions",
        inter(user_id=["u1", None, "u1", "u3"]),
        column="user_id",
        shows=("null or blank id", "i2"),
    ),
    Bad(
        "null item id (int column)",
        "interactions",
        inter(item_id=[1, 2, None, 1]),
        column="item_id",
        shows=("null or blank id",),
    ),
    Bad(
        "blank item id",
        "items",
        items_with(item_id=["i1", "   ", "ad1"]),
        column="item_id",
        shows=("null or blank id", "blue hat"),
    ),
    Bad(
        "empty-string user id",
        "users",
        lambda: good_users().with_columns(user_id=pl.Series(["u1", "", "u3"])),
        column="user_id",
        shows=("null or blank id", "DE"),
    ),
    Bad(
        "duplicate item rows",
        "items",
        items_with(item_id=["i1", "i2", "i2"]),
        column="item_id",
        shows=("duplicate item", "i2"),
    ),
    Bad(
        "duplicate user rows",
        "users",
        lambda: pl.DataFrame(
            {"user_id": ["u1", "u2", "u3", "u2"], "country": ["FR", "DE", "IT", "ES"]}
        ),
        column="user_id",
        shows=("duplicate user", "u2", "ES"),
    ),
    Bad(
        "int ids colliding as text",
        "items",
        lambda: good_items().with_columns(item_id=pl.Series([7, 8, 7], dtype=pl.Int32)),
        column="item_id",
        shows=("duplicate item", "after conversion to text", "red shoe", "buy now"),
    ),
    Bad(
        "categorical ids colliding as text",
        "users",
        lambda: pl.DataFrame(
            {"user_id": pl.Series(["u1", "u2", "u3", "u1"], dtype=pl.Categorical)}
        ),
        column="user_id",
        shows=("duplicate user", "u1"),
    ),
    Bad(
        "future datetime",
        "interactions",
        inter(ts=[datetime(2024, 1, 1), FUTURE, datetime(2024, 1, 1), datetime(2024, 1, 1)]),
        column="ts",
        shows=("in the future", str(FUTURE.year), "i2"),
    ),
    Bad(
        "datetime before 1970",
        "interactions",
        inter(
            ts=[
                datetime(2024, 1, 1),
                datetime(1969, 12, 31, 23, 59),
                datetime(2024, 1, 1),
                datetime(2024, 1, 1),
            ]
        ),
        column="ts",
        shows=("before 1970", "1969-12-31", "i2"),
    ),
    Bad(
        "negative epoch seconds",
        "interactions",
        inter(ts=[1_700_000_000, -86_400, 1_700_000_000, 1_700_000_000]),
        column="ts",
        shows=("before 1970", "-86400", "i2"),
    ),
    Bad(
        "future epoch seconds",
        "interactions",
        inter(ts=[1_700_000_000, 1_700_000_000, int(FUTURE.timestamp()), 1_700_000_000]),
        column="ts",
        shows=("in the future", "ad1"),
    ),
    Bad(
        "epoch milliseconds",
        "interactions",
        inter(ts=[1_700_000_000_000] * 4),
        column="ts",
        shows=("epoch seconds",),
    ),
    Bad(
        "date before 1970",
        "users",
        lambda: good_users().with_columns(
            signup_ts=pl.Series([date(2020, 1, 1), date(1960, 5, 1), None])
        ),
        column="signup_ts",
        shows=("before 1970", "u2"),
    ),
    Bad(
        "unparseable ts text",
        "interactions_csv",
        lambda: CSV_HEAD + "u1,i1,2024-01-01T10:00:00,view\nu2,i2,next tuesday,view\n",
        column="ts",
        shows=("unparseable timestamp", "next tuesday"),
    ),
    Bad(
        "null ts",
        "interactions",
        inter(ts=[datetime(2024, 1, 1), None, datetime(2024, 1, 1), datetime(2024, 1, 1)]),
        column="ts",
        shows=("null timestamp", "i2"),
    ),
    Bad(
        "unknown event",
        "interactions",
        inter(event=["view", "like", "view", "view"]),
        column="event",
        shows=("unknown event", "like", "i2"),
    ),
    Bad(
        "null event",
        "interactions",
        inter(event=["view", "click", None, "view"]),
        column="event",
        shows=("unknown event", "ad1"),
    ),
    Bad(
        "event of wrong type",
        "interactions",
        inter(event=[1.5, 2.5, 1.5, 1.5]),
        column="event",
        shows=("must be text",),
    ),
    Bad(
        "unknown kind",
        "items",
        items_with(kind=["product", "service", "ad"]),
        column="kind",
        shows=("'product' or 'ad'", "service"),
    ),
    Bad(
        "null kind",
        "items",
        items_with(kind=["product", None, "ad"]),
        column="kind",
        shows=("'product' or 'ad'", "i2"),
    ),
    Bad(
        "negative price",
        "items",
        items_with(price=[10.0, -3.0, 5.0]),
        column="price",
        shows=("negative", "i2"),
    ),
    Bad(
        "negative bid",
        "items",
        items_with(bid=[None, None, -0.1]),
        column="bid",
        shows=("negative", "ad1"),
    ),
    Bad(
        "ad without bid",
        "items",
        lambda: good_items().with_columns(bid=pl.Series([0.1, None, None], dtype=pl.Float64)),
        column="bid",
        shows=("ads need a bid", "ad1"),
    ),
    Bad(
        "price as text",
        "items",
        items_with(price=["10", "20", "5"]),
        column="price",
        shows=("numeric",),
    ),
    Bad(
        "nan value",
        "interactions",
        inter(value=[None, float("nan"), None, 1.0]),
        column="value",
        shows=("finite", "i2"),
    ),
    Bad(
        "infinite price",
        "items",
        items_with(price=[10.0, float("inf"), 5.0]),
        column="price",
        shows=("finite", "i2"),
    ),
    Bad(
        "infinite bid in csv",
        "items_csv",
        lambda: "item_id,kind,bid\ni1,product,\nad1,ad,-inf\ni2,product,\n",
        column="bid",
        shows=("finite", "ad1"),
    ),
    Bad(
        "1 MB title",
        "items",
        items_with(title=["ok", "x" * 1_000_000, "ok"]),
        column="title",
        shows=("title longer than", "i2"),
    ),
    Bad(
        "tags of numbers",
        "items",
        items_with(tags=[[1], [2], [3]]),
        column="tags",
        shows=("tags must be",),
    ),
    Bad(
        "end before start",
        "items",
        items_with(
            start_ts=[None, None, datetime(2024, 2, 1)], end_ts=[None, None, datetime(2024, 1, 1)]
        ),
        column="end_ts",
        shows=("ad1",),
    ),
    Bad(
        "float user attribute",
        "users",
        lambda: good_users().with_columns(age=pl.Series([1.5, 2.5, 3.5])),
        column="age",
        shows=("categorical",),
    ),
    *[
        Bad(
            f"{dtype} user attribute",
            "users",
            lambda s=s: good_users().with_columns(x=s),
            column="x",
            shows=("categorical", dtype),
        )
        for dtype, s in (
            ("Binary", pl.Series([b"\xff", b"a", b"b"])),
            ("Duration", pl.Series([timedelta(1)] * 3)),
            ("Array", pl.Series([[1, 2]] * 3, dtype=pl.Array(pl.Int64, 2))),
        )
    ],
    Bad(
        "unknown item id",
        "interactions",
        inter(item_id=["i1", "i2", "nope", "i1"]),
        column="item_id",
        shows=("missing from items", "nope", "u1"),
    ),
    Bad(
        "unknown user id",
        "interactions",
        inter(user_id=["u1", "ghost", "u1", "u3"]),
        column="user_id",
        shows=("missing from users", "ghost"),
    ),
    Bad(
        "propensity zero",
        "interactions",
        inter(propensity=[0.5, 0.0, 1.0, 0.2]),
        column="propensity",
        shows=("(0, 1]", "i2"),
    ),
    Bad(
        "propensity above one",
        "interactions",
        inter(propensity=[0.5, 1.0, 1.5, 0.2]),
        column="propensity",
        shows=("(0, 1]", "ad1"),
    ),
    Bad(
        "propensity negative",
        "interactions",
        inter(propensity=[-0.1, 1.0, 1.0, 0.2]),
        column="propensity",
        shows=("(0, 1]",),
    ),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_raises_a_data_error_naming_file_column_and_rows(
    tmp_path: Path, bad: Bad
) -> None:
    data = write_tables(tmp_path / "in", **{bad.table: bad.content()})
    before = listing(tmp_path)
    with pytest.raises(DataError) as info:
        validate_tables(data, COLS)
    tally("bad inputs: refused by validation")
    err = info.value
    file = getattr(data, bad.file or bad.table.split("_")[0])
    assert err.file == str(file)
    assert str(err).startswith(str(file))
    assert err.column == bad.column
    if bad.column:
        assert f"column '{bad.column}'" in str(err)
    for text in bad.shows:
        assert text in str(err), text
    assert len(str(err)) < 5_000  # a few rows, values clipped: never the whole 1 MB title
    assert listing(tmp_path) == before  # validation writes nothing


def test_offending_rows_carry_their_row_number(tmp_path: Path) -> None:
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(20)], "price": [1.0] * 20})
    items = items.with_columns(price=pl.when(pl.int_range(20) % 3 == 1).then(-1.0).otherwise(1.0))
    data = write_tables(
        tmp_path, items=items, interactions=inter(item_id=["i1", "i2", "i3", "i4"])()
    )
    with pytest.raises(DataError) as info:
        validate_tables(data, COLS)
    err = info.value
    assert err.n_bad == 7 and err.rows is not None and err.rows.height == 5
    assert err.rows["row"].to_list() == [1, 4, 7, 10, 13]
    assert err.rows["item_id"].to_list() == ["i1", "i4", "i7", "i10", "i13"]
    assert "7 offending row(s)" in str(err)


def test_ids_collide_only_when_equal_as_text(tmp_path: Path) -> None:
    """CSV ids stay text: "1", "01" and "001" are three items, and "01" refers to one of them;
    integer ids in one table match their text form in another."""
    interactions = "user_id,item_id,ts\n7,01,1704067200\n7,001,1704067200\n"
    items = "item_id,title\n1,a\n01,b\n001,c\n"
    data = write_tables(
        tmp_path,
        ".csv",
        interactions=interactions,
        items=items,
        users_parquet=pl.DataFrame({"user_id": [7]}),
    )
    t = validate_tables(data, COLS)
    assert t.items["item_id"].to_list() == ["1", "01", "001"]
    assert t.interactions["item_id"].to_list() == ["01", "001"]
    data = write_tables(
        tmp_path,
        ".csv",
        interactions=interactions.replace(",01,", ",0001,"),
        items=items,
        users_parquet=pl.DataFrame({"user_id": [7]}),
    )
    with pytest.raises(DataError, match="missing from items") as info:
        validate_tables(data, COLS)
    assert info.value.column == "item_id" and "0001" in str(info.value)


def test_renamed_columns_are_named_as_in_the_file(tmp_path: Path) -> None:
    cols = ColumnsConfig(user_id="uid", item_id="sku")
    data = write_tables(
        tmp_path,
        interactions=good_interactions().rename({"user_id": "uid", "item_id": "sku"}).drop("ts"),
        items=good_items().rename({"item_id": "sku"}),
        users=good_users().rename({"user_id": "uid"}),
    )
    with pytest.raises(DataError, match="required column") as info:
        validate_tables(data, cols)
    assert info.value.column == "ts"


# --- valid inputs --------------------------------------------------------------------------------

CSV_INTERACTIONS = """user_id,item_id,ts,event,value
007,0042,1704067200,view,
7,42,1704153600,purchase,12.5
007,ad9,1704240000,click,
"""
CSV_INTERACTIONS_ISO = """user_id,item_id,ts,event,value
007,0042,2024-01-01T00:00:00,view,
7,42,2024-01-02 00:00:00,purchase,12.5
007,ad9,2024-01-03,click,
"""
CSV_INTERACTIONS_OFFSET = """user_id,item_id,ts,event,value
007,0042,2024-01-01T01:00:00+01:00,view,
7,42,2024-01-02T00:00:00Z,purchase,12.5
007,ad9,2024-01-02T19:00:00-05:00,click,
"""
CSV_ITEMS = """item_id,kind,title,price,tags,bid,campaign_id
0042,product,"shoe, red",10,a|b,,
42,product,hat,20.5,c,,
ad9,ad,promo,,,0.25,0001
"""
CSV_USERS = """user_id,country,age_bucket,signup_ts
007,FR,18-24,2023-06-01T00:00:00
7,DE,25-34,
"""


def check_types(t: Tables) -> None:
    s = t.interactions.schema
    assert s["user_id"] == pl.String and s["item_id"] == pl.String
    assert s["ts"] == pl.Datetime("us") and s["ts"].time_zone is None
    assert s["value"] == pl.Float64 and s["event"] == pl.String
    assert t.items.schema["item_id"] == pl.String and t.items.schema["price"] == pl.Float64
    assert t.items.schema["tags"] == pl.List(pl.String)
    assert t.items.schema["created_ts"] == pl.Datetime("us")
    assert t.users.schema["user_id"] == pl.String
    assert t.users.schema["signup_ts"] == pl.Datetime("us")


@pytest.mark.parametrize(
    "interactions",
    [CSV_INTERACTIONS, CSV_INTERACTIONS_ISO, CSV_INTERACTIONS_OFFSET],
    ids=["epoch seconds", "iso text", "iso text with utc offsets"],
)
def test_valid_csv_keeps_leading_zeros_and_normalises_types(
    tmp_path: Path, interactions: str
) -> None:
    data = write_tables(
        tmp_path, ".csv", interactions=interactions, items=CSV_ITEMS, users=CSV_USERS
    )
    before = listing(tmp_path)
    t = validate_tables(data, COLS)
    check_types(t)
    assert t.interactions["user_id"].to_list() == ["007", "7", "007"]
    assert t.interactions["item_id"].to_list() == ["0042", "42", "ad9"]
    assert t.interactions["ts"].to_list() == [datetime(2024, 1, d) for d in (1, 2, 3)]
    assert t.interactions["value"].to_list() == [None, 12.5, None]
    assert t.items["item_id"].to_list() == ["0042", "42", "ad9"]
    assert t.items["tags"].to_list() == [["a", "b"], ["c"], None]
    assert t.items["campaign_id"].to_list() == [None, None, "0001"]
    assert t.items["kind"].to_list() == ["product", "product", "ad"]
    assert t.users["user_id"].to_list() == ["007", "7"]
    assert t.users.columns == ["user_id", "signup_ts", "country", "age_bucket"]
    assert t.users["signup_ts"].to_list() == [datetime(2023, 6, 1), None]
    assert listing(tmp_path) == before


def test_valid_csv_with_a_byte_order_mark_keeps_leading_zeros(tmp_path: Path) -> None:
    bom = "\ufeff"
    data = write_tables(
        tmp_path,
        ".csv",
        interactions=bom + CSV_INTERACTIONS,
        items=bom + CSV_ITEMS,
        users=bom + CSV_USERS,
    )
    t = validate_tables(data, COLS)
    assert t.interactions["user_id"].to_list() == ["007", "7", "007"]
    assert t.items["item_id"].to_list() == ["0042", "42", "ad9"]


def test_valid_parquet_normalises_types(tmp_path: Path) -> None:
    paris = (
        pl.Series(
            [
                datetime(2024, 1, 1, 11),
                datetime(2024, 1, 2, 1),
                datetime(2024, 1, 3),
                datetime(2024, 1, 4),
            ]
        )
        .dt.replace_time_zone("Europe/Paris")
        .dt.cast_time_unit("ms")
    )
    interactions = pl.DataFrame(
        {
            "user_id": [1, 2, 1, 3],
            "item_id": [10, 11, 12, 10],
            "ts": paris,
            "value": pl.Series([1, 2, 3, 4], dtype=pl.Int32),
        }
    )
    items = pl.DataFrame(
        {
            "item_id": ["10", "11", "12"],
            "kind": ["product", "product", "ad"],
            "bid": [None, None, 1],
            "tags": pl.Series([["x"], None, []], dtype=pl.List(pl.Categorical)),
            "available": [1, 0, None],
            "created_ts": [date(2023, 1, 1)] * 3,
        }
    )
    users = pl.DataFrame(
        {
            "user_id": pl.Series([1, 2, 3], dtype=pl.UInt16),
            "premium": [True, False, None],
            "tier": [1, 2, 3],
        }
    )
    data = write_tables(tmp_path, interactions=interactions, items=items, users=users)
    t = validate_tables(data, COLS)
    check_types(t)
    assert t.interactions["user_id"].to_list() == ["1", "2", "1", "3"]
    assert t.interactions["ts"].to_list()[:2] == [datetime(2024, 1, 1, 10), datetime(2024, 1, 2, 0)]
    assert t.interactions["event"].to_list() == ["view"] * 4  # default event
    assert t.interactions["value"].to_list() == [1.0, 2.0, 3.0, 4.0]
    assert t.items["bid"].dtype == pl.Float64
    assert t.items["available"].to_list() == [True, False, True]
    assert t.items["created_ts"].to_list() == [datetime(2023, 1, 1)] * 3
    assert t.users["user_id"].to_list() == ["1", "2", "3"]
    assert t.users["premium"].to_list() == ["true", "false", None]
    assert t.users.schema["tier"] == pl.String


def test_all_null_optional_columns_are_accepted(tmp_path: Path) -> None:
    """Polars writes an all-null column with the Null type; it is as good as a typed one."""
    nulls = {
        c: pl.Series([None] * 3)
        for c in ("category", "price", "tags", "available", "created_ts", "campaign_id", "end_ts")
    }
    items = good_items().with_columns(**nulls)
    users = good_users().with_columns(
        signup_ts=pl.Series([None] * 3), country=pl.Series([None] * 3)
    )
    interactions = good_interactions().with_columns(value=pl.Series([None] * 4))
    data = write_tables(tmp_path, interactions=interactions, items=items, users=users)
    assert pl.read_parquet(data.items).schema["price"] == pl.Null
    t = validate_tables(data, COLS)
    check_types(t)
    assert t.items["available"].to_list() == [True] * 3
    assert t.items["price"].null_count() == 3 and t.users["country"].dtype == pl.String


def test_default_good_tables_pass(tmp_path: Path) -> None:
    t = validate_tables(write_tables(tmp_path), COLS)
    assert (t.interactions.height, t.items.height, t.users.height) == (4, 3, 3)
    assert t.items.filter(pl.col("kind") == "ad")["bid"].to_list() == [0.3]


# --- the command line ----------------------------------------------------------------------------

CONFIG = (
    '[data]\ninteractions = "interactions.parquet"\nitems = "items.parquet"\n'
    'users = "users.parquet"\n'
)


def test_cli_validate_bad_input_exits_3_naming_the_file(tmp_path: Path) -> None:
    write_tables(tmp_path, interactions=inter(event=["view", "like", "view", "view"])())
    (tmp_path / "config.toml").write_text(CONFIG)
    before = listing(tmp_path)
    result = runner.invoke(app, ["validate", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 3, result.output
    assert str(tmp_path / "interactions.parquet") in result.output
    assert "column 'event'" in result.output and "like" in result.output
    assert "Traceback" not in result.output
    assert listing(tmp_path) == before


def test_cli_validate_missing_table_exits_3(tmp_path: Path) -> None:
    write_tables(tmp_path, users=None)
    (tmp_path / "config.toml").write_text(CONFIG)
    result = runner.invoke(app, ["validate", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 3
    assert str(tmp_path / "users.parquet") in result.output and "file not found" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_good_input_exits_0(tmp_path: Path) -> None:
    write_tables(tmp_path)
    (tmp_path / "config.toml").write_text(CONFIG)
    before = listing(tmp_path)
    result = runner.invoke(app, ["validate", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 0, result.output
    assert "input is valid" in result.output
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("[split]\nvalid_days = 7\ntest_days = 7\nshuffle = true\n", "split.shuffle: unknown key"),
        ("[split]\nvalid_days = 'a week'\ntest_days = 7\n", "split.valid_days"),
        ("[columns]\nuser_id = 3\n", "columns.user_id"),
    ],
)
def test_cli_config_errors_name_the_key(tmp_path: Path, extra: str, where: str) -> None:
    write_tables(tmp_path)
    (tmp_path / "config.toml").write_text(CONFIG + extra)
    result = runner.invoke(app, ["validate", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 4
    assert where in result.output
    assert str(tmp_path / "config.toml") in result.output
    assert "Traceback" not in result.output


def test_cli_nightly_stops_on_every_bad_input_and_publishes_nothing(tmp_path: Path) -> None:
    """The whole corpus through `recengine nightly`: exit 3, the file and column named, no
    traceback, no version and no `current`."""
    for n, bad in enumerate(BAD):
        folder = tmp_path / str(n)
        data = write_tables(folder, **{bad.table: bad.content()})
        config = folder / "config.toml"
        config.write_text(
            "[data]\n" + "".join(f'{name} = "{getattr(data, name).name}"\n' for name in NAMES)
        )
        result = runner.invoke(app, ["nightly", "--config", str(config)])
        assert result.exit_code == 3, (bad.id, result.output)
        file = getattr(data, bad.file or bad.table.split("_")[0])
        assert str(file) in result.output, bad.id
        if bad.column:
            assert f"column '{bad.column}'" in result.output, bad.id
        assert "Traceback" not in result.output, bad.id
        root = folder / "artifacts"
        assert not (root / "current").exists() and not (root / "versions").exists(), bad.id
        tally("bad inputs: nightly runs refused")


@pytest.mark.parametrize(
    ("text", "shows", "code"),
    [
        (CONFIG + "[jobs]\nk = 10\nschedule = 'nightly'\n", "jobs.schedule: unknown key", 4),
        (CONFIG + "[rerank]\nnum_boost_round = 'many'\n", "rerank.num_boost_round", 4),
        (CONFIG + "[jobs]\nretention = 0\n", "jobs.retention", 4),
        (CONFIG.replace("items.parquet", "no/such/items.parquet"), "file not found", 3),
        (CONFIG + "[data\n", "not valid TOML", 4),
        (None, "config file not found", 4),
    ],
    ids=[
        "unknown key",
        "wrong type",
        "out of range",
        "missing data path",
        "not toml",
        "missing config",
    ],
)
def test_cli_nightly_names_config_errors(
    tmp_path: Path, text: str | None, shows: str, code: int
) -> None:
    write_tables(tmp_path)
    config = tmp_path / "config.toml"
    if text is not None:
        config.write_text(text)
    result = runner.invoke(app, ["nightly", "--config", str(config)])
    assert result.exit_code == code and shows in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "artifacts").exists()
    tally("bad inputs: nightly runs refused")


# --- property: random tables give Tables or a DataError, never anything else ---------------------

ISO = ["2024-01-01", "2024-01-01T10:00:00", "2024-01-01 10:00:00+02:00", "2024-03-01T00:00:00Z"]
BAD_ISO = ["1969-07-20", "0001-01-01", "3000-01-01", "9999-12-31T23:59:59", "2024-02-30", "soon"]
RECENT = (datetime(2000, 1, 1), datetime(2024, 12, 31))
TEXT = st.one_of(
    st.sampled_from(
        [*EVENTS, "product", "ad", "like", "0", "007", " ", "", "a|b", "nan", *ISO, *BAD_ISO]
    ),
    st.text(max_size=6),
)
# kind -> (values, dtype); nulls are mixed in by `frames`
KINDS: dict[str, tuple[st.SearchStrategy[object], pl.DataType]] = {
    "small_int": (st.integers(0, 5), pl.Int64),
    "small_str": (st.integers(0, 5).map(str), pl.String),
    "int": (st.integers(-(2**63), 2**63 - 1), pl.Int64),
    "uint": (st.integers(0, 2**64 - 1), pl.UInt64),
    "epoch": (st.integers(1_000_000_000, 1_700_000_000), pl.Int64),
    "any_epoch": (st.integers(-(10**10), 10**10), pl.Int32),
    "str": (TEXT, pl.String),
    "cat": (TEXT, pl.Categorical),
    "iso": (st.sampled_from(ISO), pl.String),
    "any_iso": (st.sampled_from(ISO + BAD_ISO), pl.String),
    "event": (st.sampled_from(EVENTS), pl.String),
    "item_kind": (st.sampled_from(["product", "ad"]), pl.String),
    "float": (st.floats(allow_nan=True, allow_infinity=True), pl.Float64),
    "small_float": (st.floats(0, 100), pl.Float64),
    "unit": (st.floats(0.01, 1), pl.Float32),
    "bool": (st.booleans(), pl.Boolean),
    "datetime": (st.datetimes(*RECENT), pl.Datetime("us")),
    "datetime_ms": (st.datetimes(*RECENT), pl.Datetime("ms")),
    "datetime_tz": (st.datetimes(*RECENT), pl.Datetime("us", "America/New_York")),
    "date": (st.dates(RECENT[0].date(), RECENT[1].date()), pl.Date),
    "any_datetime": (st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)), pl.Datetime("us")),
    "any_datetime_tz": (
        st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)),
        pl.Datetime("ms", "Asia/Kolkata"),
    ),
    "any_date": (st.dates(), pl.Date),
    "list_str": (st.lists(TEXT, max_size=3), pl.List(pl.String)),
    "list_int": (st.lists(st.integers(0, 9), max_size=2), pl.List(pl.Int64)),
    "binary": (st.binary(max_size=3), pl.Binary),
    "duration": (st.timedeltas(timedelta(days=-9), timedelta(days=9)), pl.Duration("us")),
    "array": (st.lists(st.integers(0, 9), min_size=2, max_size=2), pl.Array(pl.Int64, 2)),
    "null": (st.none(), pl.Null),
}
TS_KINDS = ("datetime", "datetime_ms", "datetime_tz", "date", "epoch", "iso")
TYPICAL = {
    "user_id": ("small_int", "small_str"),
    "item_id": ("small_int", "small_str"),
    "ts": TS_KINDS,
    "event": ("event",),
    "value": ("small_float", "float"),
    "propensity": ("unit",),
    "kind": ("item_kind",),
    "title": ("str",),
    "category": ("str", "cat"),
    "brand": ("cat",),
    "price": ("small_float",),
    "tags": ("list_str", "str"),
    "available": ("bool", "small_int"),
    "created_ts": TS_KINDS,
    "campaign_id": ("small_str", "small_int"),
    "bid": ("small_float",),
    "daily_budget": ("small_float",),
    "start_ts": TS_KINDS,
    "end_ts": TS_KINDS,
    "signup_ts": TS_KINDS,
    "country": ("str", "cat"),
    "age_bucket": ("small_int", "bool"),
}
MOSTLY = st.sampled_from([True] * 9 + [False])  # True 9 times in 10
INTERACTION_COLS = (("user_id", "item_id", "ts"), ("event", "value", "propensity"))
ITEM_COLS = (
    ("item_id",),
    (
        "kind",
        "title",
        "category",
        "brand",
        "price",
        "tags",
        "available",
        "created_ts",
        "campaign_id",
        "bid",
        "daily_budget",
        "start_ts",
        "end_ts",
    ),
)
USER_COLS = (("user_id",), ("signup_ts", "country", "age_bucket"))


@st.composite
def frames(
    draw: st.DrawFn,
    columns: tuple[tuple[str, ...], tuple[str, ...]],
    unique: str | None = None,
    pools: dict[str, list[int]] | None = None,
) -> pl.DataFrame:
    """A small table of a random subset of the contract's columns; each column usually of a
    typical type for it, sometimes of any type, sometimes with nulls. `unique`: an id column
    whose typical values are distinct; `pools`: the ids an id column's typical values come
    from (so that the tables often pass and the later checks are reached)."""
    required, optional = columns
    names = [c for c in required if draw(MOSTLY)]
    names += draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)))
    n = draw(st.integers(1, 5)) if draw(MOSTLY) else 0
    series = []
    for name in names:
        typical = draw(MOSTLY)
        kind = draw(st.sampled_from(TYPICAL[name] if typical else sorted(KINDS)))
        values, dtype = KINDS[kind]
        pool = (pools or {}).get(name)
        if typical and name == unique:
            raw = draw(st.lists(st.integers(0, 5), unique=True, min_size=n, max_size=n))
        elif typical and pool:
            raw = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        else:
            if dtype != pl.Null and not draw(MOSTLY):
                values = st.one_of(st.none(), values)
            raw = draw(st.lists(values, min_size=n, max_size=n))
        if typical and (name == unique or pool):
            raw = [str(v) for v in raw] if dtype == pl.String else raw
        if isinstance(dtype, pl.Datetime) and dtype.time_zone:
            s = pl.Series(name, raw, dtype=pl.Datetime(dtype.time_unit)).dt.replace_time_zone(
                dtype.time_zone, ambiguous="null", non_existent="null"
            )
        else:
            s = pl.Series(name, raw, dtype=dtype, strict=False)
        series.append(s)
    return pl.DataFrame(series)


def int_ids(df: pl.DataFrame, col: str) -> list[int]:
    if col not in df.columns or df[col].dtype not in (pl.Int64, pl.String):
        return []
    return [int(v) for v in df[col].drop_nulls() if str(v).isdigit()]


@st.composite
def input_tables(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    items = draw(frames(ITEM_COLS, unique="item_id"))
    users = draw(frames(USER_COLS, unique="user_id"))
    pools = {"item_id": int_ids(items, "item_id"), "user_id": int_ids(users, "user_id")}
    return draw(frames(INTERACTION_COLS, pools=pools)), items, users


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(input_tables())
def test_random_tables_give_features_or_a_data_error(
    tables: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    interactions, items, users = tables
    with tempfile.TemporaryDirectory() as tmp:
        data = write_tables(Path(tmp), interactions=interactions, items=items, users=users)
        before = listing(Path(tmp))
        # each table on its own too, so that a bad interactions table does not hide the others
        for check, path in (
            (validate_interactions, data.interactions),
            (validate_items, data.items),
            (validate_users, data.users),
        ):
            try:
                check(path, COLS)
            except DataError as err:
                assert err.file == str(path)
        try:
            t = validate_tables(data, COLS)
        except DataError as err:
            assert err.file in {str(data.interactions), str(data.items), str(data.users)}
            tally("random tables: refused with a DataError")
        else:
            check_types(t)
            cfg = PipelineConfig(data=data)
            for window in ("train", "valid", "all"):  # the feature pipeline runs on them
                fs = build_features(cfg, window=window, tables=t)
                assert fs.interactions.height <= t.interactions.height
            try:  # and says plainly when they are too few to train on
                require_windows(fs, data.interactions, ("train", "valid", "test"))
            except DataError as err:
                assert err.file == str(data.interactions) and "too little data" in str(err)
            tally("random tables: accepted, features built")
        assert listing(Path(tmp)) == before
