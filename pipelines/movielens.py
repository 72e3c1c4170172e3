"""Import MovieLens (100K, 1M, latest-small) into recengine's data contract.

MovieLens is the usual first data set for a recommender, but its three common releases each use
their own file layout, separator and encoding. This module turns any of them into the three
contract tables plus a `config.toml` that runs as-is, so trying recengine on public data is one
call and the result is checked by the same validation as any user's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from pipelines.config import load_config, write_data_config
from pipelines.errors import DataError
from pipelines.io import read_table, write_parquet
from pipelines.validate import validate_tables

Format = Literal["100k", "1m", "latest-small"]

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGE_BREAKS = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
NO_GENRES = ("(no genres listed)", "unknown")
# Required files of each format, the ratings file first (it is what identifies the format).
FILES: dict[Format, tuple[str, ...]] = {
    "100k": ("u.data", "u.item", "u.user"),
    "1m": ("ratings.dat", "movies.dat", "users.dat"),
    "latest-small": ("ratings.csv", "movies.csv"),
}


@dataclass(frozen=True)
class ImportSummary:
    """What `import_movielens` found and wrote."""

    format: Format
    n_users: int
    n_items: int
    n_interactions: int
    interactions: Path
    items: Path
    users: Path
    config: Path


def _fields(path: Path, sep: str, names: list[str]) -> pl.DataFrame:
    """Split a latin-1 text file into string columns `names` (extra fields are dropped)."""
    lines = path.read_bytes().decode("latin-1").rstrip().splitlines()  # row i = line i
    if not lines:
        raise DataError(path, "file is empty")
    parts = (
        pl.DataFrame({"line": lines})
        .with_row_index("row")
        .with_columns(pl.col("line").str.split(sep).alias("f"))
    )
    short = parts.filter(pl.col("f").list.len() < len(names))
    if short.height:
        raise DataError(
            path,
            f"expected {len(names)} '{sep}'-separated fields",
            rows=short.select("row", "line"),
        )
    return parts.select(
        pl.col("f").list.get(i).str.strip_chars().alias(n) for i, n in enumerate(names)
    )


def _numbers(df: pl.DataFrame, path: Path, dtypes: dict[str, type[pl.DataType]]) -> pl.DataFrame:
    """Cast text columns to numbers; unparseable values are a `DataError` naming the column."""
    for col, dtype in dtypes.items():
        cast = df[col].cast(dtype, strict=False)
        bad = df.with_row_index("row").filter(cast.is_null() & df[col].is_not_null())
        if bad.height:
            raise DataError(path, f"not a number ({dtype})", column=col, rows=bad)
        df = df.with_columns(cast)
    return df


def _interactions(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """user_id, item_id, rating, unix seconds -> contract interactions."""
    if df.height == 0:
        raise DataError(path, "no ratings")
    df = _numbers(df, path, {"rating": pl.Float64, "ts": pl.Int64})
    return df.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.from_epoch("ts", time_unit="s").cast(pl.Datetime("us")).alias("ts"),
        pl.lit("rating").alias("event"),
        pl.col("rating").alias("value"),
    )


def _items(ids: pl.Series, titles: pl.Series, genres: pl.Series) -> pl.DataFrame:
    """Contract items from ids, titles and each item's list of genres."""
    tags = genres.list.eval(
        pl.element().filter(~pl.element().is_in(NO_GENRES) & (pl.element() != ""))
    )
    return pl.DataFrame({"item_id": ids.cast(pl.String), "title": titles, "tags": tags}).select(
        "item_id",
        pl.lit("product").alias("kind"),
        "title",
        pl.col("tags").list.first().alias("category"),
        "tags",
        pl.lit(True).alias("available"),
        pl.lit(None, pl.Datetime("us")).alias("created_ts"),
    )


def _read_100k(src: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """MovieLens 100K: u.data, u.item (genre flags), u.user (age bucketed)."""
    path = src / "u.data"
    inter = _interactions(_fields(path, "\t", ["user_id", "item_id", "rating", "ts"]), path)
    flags = [f"g{i}" for i in range(len(GENRES_100K))]
    raw = _fields(src / "u.item", "|", ["item_id", "title", "release", "video", "url", *flags])
    genres = raw.select(
        pl.concat_list(
            pl.when(pl.col(f) == "1").then(pl.lit(g))
            for f, g in zip(flags, GENRES_100K, strict=False)
        ).list.drop_nulls()
    ).to_series()
    items = _items(raw["item_id"], raw["title"], genres)
    path = src / "u.user"
    users = _numbers(
        _fields(path, "|", ["user_id", "age", "gender", "occupation"]), path, {"age": pl.Int64}
    )
    bucket = pl.lit(
        AGE_LABELS[-1]
    )  # a when-chain: `cut` is deprecated, `bin_intervals` experimental
    for upper, label in reversed(list(zip(AGE_BREAKS, AGE_LABELS, strict=False))):
        bucket = pl.when(pl.col("age") < upper).then(pl.lit(label)).otherwise(bucket)
    users = users.select("user_id", bucket.alias("age_bucket"), "gender", "occupation")
    return inter, items, users


def _read_1m(src: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """MovieLens 1M: '::'-separated .dat files; age and occupation stay codes."""
    path = src / "ratings.dat"
    inter = _interactions(_fields(path, "::", ["user_id", "item_id", "rating", "ts"]), path)
    raw = _fields(src / "movies.dat", "::", ["item_id", "title", "genres"])
    items = _items(raw["item_id"], raw["title"], raw["genres"].str.split("|"))
    users = _fields(src / "users.dat", "::", ["user_id", "gender", "age_bucket", "occupation"])
    return inter, items, users.select("user_id", "age_bucket", "gender", "occupation")


def _csv(path: Path, columns: list[str], ids: list[str]) -> pl.DataFrame:
    """Read a latest-small CSV, requiring its header to name `columns`."""
    df = read_table(path, string_columns=ids)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(path, f"required column(s) missing: {missing}; found {df.columns}")
    return df


def _read_latest(src: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """MovieLens latest-small: CSVs; users are the distinct raters."""
    path = src / "ratings.csv"
    raw = _csv(path, ["userId", "movieId", "rating", "timestamp"], ["userId", "movieId"])
    raw = raw.rename({"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
    inter = _interactions(raw.select("user_id", "item_id", "rating", "ts"), path)
    raw = _csv(src / "movies.csv", ["movieId", "title", "genres"], ["movieId"])
    items = _items(raw["movieId"], raw["title"], raw["genres"].str.split("|"))
    users = inter.select(pl.col("user_id").unique(maintain_order=True))
    return inter, items, users


READERS = {"100k": _read_100k, "1m": _read_1m, "latest-small": _read_latest}


def _detect(src: Path) -> Format:
    """The format whose files SRC holds; a missing required file is a `DataError`."""
    if not src.is_dir():
        raise DataError(src, "not a folder")
    for fmt, files in FILES.items():
        if any((src / f).is_file() for f in files):
            for f in files:
                if not (src / f).is_file():
                    raise DataError(src / f, f"file not found (required for MovieLens {fmt})")
            return fmt
    expected = ", ".join(f"{' + '.join(files)} ({fmt})" for fmt, files in FILES.items())
    raise DataError(src, f"no MovieLens files found: expected {expected}")


def _write_config(path: Path) -> None:
    """Config with a per-user split: each user's latest 20% of ratings held out. Raters come
    in one or two bursts, most of them long before the last weeks, so a global test window
    would hold a few dozen of them (58 of 943 users in MovieLens 100K)."""
    write_data_config(
        path,
        split={"strategy": "holdout", "holdout_share": 0.2},
        comment="MovieLens imported by `recengine import movielens`.",
    )


def import_movielens(src: Path, out: Path) -> ImportSummary:
    """Convert the MovieLens release in folder `src` into contract tables and a config in `out`.

    Raises:
        DataError: no MovieLens files in `src`, a required file missing, or malformed content.
    """
    src, out = Path(src), Path(out)
    fmt = _detect(src)
    inter, items, users = READERS[fmt](src)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in ("interactions", "items", "users")}
    write_parquet(inter, paths["interactions"])
    write_parquet(items, paths["items"])
    write_parquet(users, paths["users"])
    config = out / "config.toml"
    _write_config(config)
    cfg = load_config(config)
    validate_tables(cfg.data, cfg.columns)  # self-check: the output meets the contract
    return ImportSummary(
        format=fmt,
        n_users=users.height,
        n_items=items.height,
        n_interactions=inter.height,
        config=config,
        **paths,
    )
