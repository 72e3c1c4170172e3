"""Reading input tables and writing outputs safely.

Reads Parquet or CSV and turns every way a file can be unreadable (missing, empty, truncated,
ragged, not UTF-8) into a `DataError` that names the file. Writes go to a temporary name and are
renamed into place, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from pipelines.errors import DataError, RecengineError, WriteError

_UMASK = os.umask(0)
os.umask(_UMASK)
PROGRAMMING_ERRORS = (
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    NameError,
    AssertionError,
    ArithmeticError,
)
"""Raised inside a write block by a bug, not by the disk: never reported as a write failure."""


def require_file(path: Path) -> Path:
    """`path`, or a `DataError` naming it when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file, expected a Parquet or CSV file")
    return path


def read_table(path: Path, *, string_columns: Sequence[str] = ()) -> pl.DataFrame:
    """Read a Parquet or CSV file (by extension), failing with a `DataError` that names it.

    `string_columns` are read as text from CSV so ids like ``007`` keep their leading zeros.
    """
    path = require_file(path)
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            with path.open("rb") as fh:
                header = fh.readline().decode("utf-8-sig")  # strict: the header must be UTF-8 too
            sep = "\t" if suffix == ".tsv" else ","
            present = {c.strip().strip('"') for c in header.rstrip("\r\n").split(sep)}
            overrides = {c: pl.String for c in string_columns if c in present}
            return pl.read_csv(path, separator=sep, schema_overrides=overrides, encoding="utf8")
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        kind = "Parquet" if suffix in (".parquet", ".pq") else "CSV"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            path, f"cannot be read as {kind} (truncated or malformed?): {first}"
        ) from None
    raise DataError(path, f"unsupported file type '{suffix}': use .parquet or .csv")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds.

    A failure to write comes out as a `WriteError` naming `final`: writers from Arrow,
    LightGBM, FAISS and torch each raise their own type when the disk is full or the folder is
    not writable. The library's own errors and programming errors (a TypeError in what the
    block computes) pass through unchanged."""
    final = Path(final)
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files follow the umask
        yield Path(tmp)
        os.replace(tmp, final)
    except (RecengineError, *PROGRAMMING_ERRORS):
        raise
    except Exception as exc:
        raise WriteError(final, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pl.DataFrame, path: Path) -> Path:
    """Write `df` to `path` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(path)


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (artifact manifests, index files)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
