"""Validate the three input tables against the data contract and normalise their types.

Output types are fixed whatever the input used: ids are strings, timestamps are naive UTC
``Datetime("us")``, money is Float64. Every violation raises a `DataError` naming the file, the
column and a few offending rows (with their 0-based row number). Validation only reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from pipelines.config import EVENTS, ColumnsConfig, DataConfig
from pipelines.errors import DataError
from pipelines.event_log import read_events
from pipelines.io import read_table

log = logging.getLogger(__name__)

TS = pl.Datetime("us")
ROW = "row"
MAX_TITLE_CHARS = 10_000
EARLIEST = datetime(1970, 1, 1)
ITEM_KINDS = ("product", "ad")


@dataclass(frozen=True)
class Tables:
    """The validated input: interactions, items and users with normalised types."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame


class _Checker:
    """Checks on one table; each failure names `file` and the column."""

    def __init__(self, file: Path, df: pl.DataFrame) -> None:
        self.file = file
        if ROW in df.columns:
            raise DataError(
                file,
                f"column name '{ROW}' is reserved (it numbers offending rows in "
                "errors); rename that column",
                column=ROW,
            )
        self.df = df.with_row_index(ROW)

    def fail(self, message: str, column: str | None = None, bad: pl.Expr | None = None) -> None:
        rows = None
        if bad is not None:
            rows = self.df.filter(bad)
            if rows.height == 0:
                return
        raise DataError(self.file, message, column=column, rows=rows)

    def require(self, columns: list[str]) -> None:
        missing = [c for c in columns if c not in self.df.columns]
        if missing:
            raise DataError(
                self.file,
                f"required column(s) missing: {missing}; found {self.df.columns[1:]}",
                column=missing[0],
            )

    def non_empty(self) -> None:
        if self.df.height == 0:
            raise DataError(self.file, "table has no rows")

    def ids(self, col: str) -> None:
        """Ids are integers or strings, never null or blank; normalised to strings."""
        dtype = self.df.schema[col]
        if not (dtype.is_integer() or dtype in (pl.String, pl.Categorical, pl.Null)):
            self.fail(f"ids must be integers or strings, found {dtype}", col)
        self.df = self.df.with_columns(pl.col(col).cast(pl.String))
        self.fail(
            "null or blank id", col, pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")
        )

    def unique(self, col: str, what: str) -> None:
        self.fail(
            f"duplicate {what} rows (same id after conversion to text)",
            col,
            pl.col(col).is_duplicated(),
        )

    def timestamp(self, col: str, *, required: bool) -> None:
        """Accept Datetime, Date, epoch seconds (integers) or ISO text; store naive UTC."""
        dtype = self.df.schema[col]
        c = pl.col(col)
        if isinstance(dtype, pl.Datetime):
            expr = (
                c.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else c
            )
            expr = expr.cast(TS)
        elif dtype == pl.Date:
            expr = c.cast(TS)
        elif dtype.is_integer():
            expr = pl.from_epoch(c, time_unit="s").cast(TS)
        elif dtype == pl.Null:  # an all-null column (Parquet from polars)
            expr = c.cast(TS)
        elif dtype == pl.String:
            expr = c.str.to_datetime(
                time_unit="us", strict=False, time_zone="UTC"
            ).dt.replace_time_zone(None)
            self.fail("unparseable timestamp text", col, c.is_not_null() & expr.is_null())
        else:
            self.fail(
                f"timestamps must be datetimes, epoch seconds or ISO text, found {dtype}", col
            )
            return
        if dtype.is_integer():
            self.fail(
                "timestamp before 1970 or in the future (epoch seconds)",
                col,
                (c < 0) | (c > int((datetime.now() + timedelta(days=1)).timestamp())),
            )
        self.df = self.df.with_columns(expr.alias(col))
        if required:
            self.fail("null timestamp", col, pl.col(col).is_null())
        latest = datetime.now() + timedelta(days=1)
        self.fail(
            "timestamp before 1970 or in the future",
            col,
            (pl.col(col) < EARLIEST) | (pl.col(col) > latest),
        )

    def number(self, col: str, *, non_negative: bool = False) -> None:
        dtype = self.df.schema[col]
        if not (dtype.is_numeric() or dtype == pl.Null):
            self.fail(f"must be numeric, found {dtype}", col)
        self.df = self.df.with_columns(pl.col(col).cast(pl.Float64))
        self.fail("not a finite number", col, pl.col(col).is_nan() | pl.col(col).is_infinite())
        if non_negative:
            self.fail("negative value", col, pl.col(col) < 0)

    def text(self, col: str) -> None:
        dtype = self.df.schema[col]
        if dtype not in (pl.String, pl.Categorical, pl.Null) and not dtype.is_integer():
            self.fail(f"must be text, found {dtype}", col)
        self.df = self.df.with_columns(pl.col(col).cast(pl.String))

    def result(self) -> pl.DataFrame:
        return self.df.drop(ROW)


def _load(path: Path, rename: dict[str, str], id_cols: list[str]) -> _Checker:
    source = {v: k for k, v in rename.items()}
    raw = read_table(path, string_columns=[source.get(c, c) for c in id_cols])
    raw = raw.rename({k: v for k, v in rename.items() if k in raw.columns and k != v})
    return _Checker(path, raw)


def validate_interactions(path: Path, cols: ColumnsConfig) -> pl.DataFrame:
    """Check the interactions table: ids, timestamps, event names, values."""
    rename = {
        cols.user_id: "user_id",
        cols.item_id: "item_id",
        cols.ts: "ts",
        cols.event: "event",
        cols.value: "value",
    }
    ck = _load(path, rename, ["user_id", "item_id"])
    ck.require(["user_id", "item_id", "ts"])
    ck.non_empty()
    ck.ids("user_id")
    ck.ids("item_id")
    ck.timestamp("ts", required=True)
    if "event" in ck.df.columns:
        ck.text("event")
        ck.fail(
            f"unknown event name (allowed: {', '.join(EVENTS)})",
            "event",
            pl.col("event").is_null() | ~pl.col("event").is_in(EVENTS),
        )
    else:
        ck.df = ck.df.with_columns(pl.lit("view").alias("event"))
    if "value" in ck.df.columns:
        ck.number("value")
    else:
        ck.df = ck.df.with_columns(pl.lit(None, pl.Float64).alias("value"))
    if "propensity" in ck.df.columns:
        ck.number("propensity")
        ck.fail(
            "propensity must be in (0, 1]",
            "propensity",
            (pl.col("propensity") <= 0) | (pl.col("propensity") > 1),
        )
    keep = ["user_id", "item_id", "ts", "event", "value"] + (
        ["propensity"] if "propensity" in ck.df.columns else []
    )
    return ck.result().select(keep)


def validate_items(path: Path, cols: ColumnsConfig) -> pl.DataFrame:
    """Check the items table: unique ids, kinds, content columns, prices and ad settings."""
    ck = _load(path, {cols.item_id: "item_id"}, ["item_id", "campaign_id"])
    ck.require(["item_id"])
    ck.non_empty()
    ck.ids("item_id")
    ck.unique("item_id", "item")
    df = ck.df
    if "kind" in df.columns:
        ck.text("kind")
        ck.fail(
            "kind must be 'product' or 'ad'",
            "kind",
            pl.col("kind").is_null() | ~pl.col("kind").is_in(ITEM_KINDS),
        )
    else:
        ck.df = ck.df.with_columns(pl.lit("product").alias("kind"))
    for col in ("title", "category", "brand", "campaign_id"):
        if col in ck.df.columns:
            ck.text(col)
        else:
            ck.df = ck.df.with_columns(pl.lit(None, pl.String).alias(col))
    ck.fail(
        f"title longer than {MAX_TITLE_CHARS} characters",
        "title",
        pl.col("title").str.len_chars() > MAX_TITLE_CHARS,
    )
    for col in ("price", "bid", "daily_budget"):
        if col in ck.df.columns:
            ck.number(col, non_negative=True)
        else:
            ck.df = ck.df.with_columns(pl.lit(None, pl.Float64).alias(col))
    if "tags" in ck.df.columns:
        dtype = ck.df.schema["tags"]
        if dtype == pl.String:  # CSV: tags joined by '|'
            ck.df = ck.df.with_columns(pl.col("tags").str.split("|"))
        elif dtype != pl.Null and not (
            isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Categorical, pl.Null)
        ):
            ck.fail(f"tags must be a list of text or '|'-joined text, found {dtype}", "tags")
        ck.df = ck.df.with_columns(pl.col("tags").cast(pl.List(pl.String)))
    else:
        ck.df = ck.df.with_columns(pl.lit(None, pl.List(pl.String)).alias("tags"))
    if "available" in ck.df.columns:
        dtype = ck.df.schema["available"]
        if dtype not in (pl.Boolean, pl.Null) and not dtype.is_integer():
            ck.fail(f"available must be boolean, found {dtype}", "available")
        ck.df = ck.df.with_columns(pl.col("available").cast(pl.Boolean).fill_null(True))
    else:
        ck.df = ck.df.with_columns(pl.lit(True).alias("available"))
    for col in ("created_ts", "start_ts", "end_ts"):
        if col in ck.df.columns:
            ck.timestamp(col, required=False)
        else:
            ck.df = ck.df.with_columns(pl.lit(None, TS).alias(col))
    is_ad = pl.col("kind") == "ad"
    ck.fail("ads need a bid", "bid", is_ad & pl.col("bid").is_null())
    ck.fail("end_ts before start_ts", "end_ts", pl.col("end_ts") < pl.col("start_ts"))
    keep = [
        "item_id",
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
    ]
    return ck.result().select(keep)


def validate_users(path: Path, cols: ColumnsConfig) -> pl.DataFrame:
    """Check the users table: unique ids; attribute columns become text."""
    ck = _load(path, {cols.user_id: "user_id"}, ["user_id"])
    ck.require(["user_id"])
    ck.non_empty()
    ck.ids("user_id")
    ck.unique("user_id", "user")
    if "signup_ts" in ck.df.columns:
        ck.timestamp("signup_ts", required=False)
    else:
        ck.df = ck.df.with_columns(pl.lit(None, TS).alias("signup_ts"))
    attrs = cols.user_attributes
    if attrs is None:
        attrs = tuple(c for c in ck.df.columns if c not in (ROW, "user_id", "signup_ts"))
    ck.require(list(attrs))
    for col in attrs:
        dtype = ck.df.schema[col]
        if dtype.is_float() or isinstance(
            dtype, (pl.List, pl.Array, pl.Struct, pl.Binary, pl.Duration)
        ):
            ck.fail(
                f"user attributes must be categorical (text, integer, boolean), found {dtype}", col
            )
        ck.df = ck.df.with_columns(pl.col(col).cast(pl.String))
    return ck.result().select(["user_id", "signup_ts", *attrs])


def validate_tables(data: DataConfig, cols: ColumnsConfig) -> Tables:
    """Validate all three tables and the references between them."""
    interactions = validate_interactions(data.interactions, cols)
    items = validate_items(data.items, cols)
    users = validate_users(data.users, cols)
    for col, table, path in (("item_id", items, data.items), ("user_id", users, data.users)):
        unknown = interactions.with_row_index(ROW).join(table.select(col), on=col, how="anti")
        if unknown.height:
            raise DataError(
                data.interactions,
                f"{unknown.height} interaction(s) refer to ids missing from {path.name}",
                column=col,
                rows=unknown,
            )
    if data.events is not None:
        interactions, users = _with_events(data.events, interactions, items, users)
    return Tables(interactions=interactions, items=items, users=users)


def _with_events(
    path: Path, interactions: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The interactions with the event log's events after them, and a users row (no
    attributes) for each user only the events know: a session the service saw. Events on
    items the catalogue no longer lists are left out (they stay in the log's consumed parts)."""
    events = read_events(path).drop("event_id")
    kept = events.join(items.select("item_id"), on="item_id", how="semi")
    if kept.height < events.height:
        log.warning(
            "%s: %d event(s) on items missing from the items table left out",
            path,
            events.height - kept.height,
        )
    new_users = (
        kept.select("user_id").unique(maintain_order=True).join(users, on="user_id", how="anti")
    )
    users = pl.concat([users, new_users], how="diagonal_relaxed")
    interactions = pl.concat([interactions, kept], how="diagonal_relaxed")
    return interactions, users
