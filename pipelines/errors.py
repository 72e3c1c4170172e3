"""The library's own error types, one per kind of failure.

Every failure a user can cause is raised as a `RecengineError`, so the CLI can print it without a
traceback and callers can catch one type; its subclass says which kind it is (the CLI exits with
one status per kind):

- `DataError`: an input table breaks the data contract.
- `ConfigError`: a config or settings file cannot be read or does not match its schema.
- `ArtifactError`: an artifact the library wrote is missing or refused (no published version, a
  checksum or manifest that does not match, a file that is not what it should be).
- `WriteError`: an output could not be written.
- `QualityGateError`: a new version was not published because its figures are worse.
- `RunLockedError`: another run holds the artifacts root.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

MAX_ROWS_SHOWN = 5


class RecengineError(Exception):
    """Base class of errors caused by input the user gave (data, config, paths)."""


class ConfigError(RecengineError):
    """A config file that cannot be read or does not match the schema."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class DataError(RecengineError):
    """An input table that breaks the data contract.

    Names the file, the column and, where it applies, a few offending rows so that the user can
    find and fix them without reading our code.
    """

    def __init__(
        self,
        file: Path | str,
        message: str,
        *,
        column: str | None = None,
        rows: pl.DataFrame | None = None,
        n_bad: int | None = None,
    ) -> None:
        self.file = str(file)
        self.column = column
        self.rows = rows.head(MAX_ROWS_SHOWN) if rows is not None else None
        self.n_bad = n_bad if n_bad is not None else (rows.height if rows is not None else None)
        where = f"{self.file}" + (f", column '{column}'" if column else "")
        text = f"{where}: {message}"
        if self.rows is not None and self.rows.height:
            with pl.Config(tbl_rows=MAX_ROWS_SHOWN, tbl_cols=8, fmt_str_lengths=40):
                text += (
                    f"\n{self.n_bad} offending row(s); the first {self.rows.height} "
                    f"(row = 0-based row number in the file):\n{self.rows}"
                )
        super().__init__(text)


class ArtifactError(RecengineError):
    """An artifact the library wrote that is missing or refused: no published version, a
    manifest or checksum that does not match the files, a model, index or vocabulary file that
    is absent or not what it should be. Not the user's input tables (`DataError`): the fix is to
    rebuild or republish, not to edit the data."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class WriteError(RecengineError):
    """An output that could not be written: disk full, no permission, a read-only folder.
    Raised from `pipelines.io.atomic_path`, so nothing half-written is left under the name."""

    def __init__(self, path: Path | str, cause: BaseException) -> None:
        self.path = str(path)
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        hint = "" if isinstance(cause, OSError) else "; is the disk full or the folder read-only?"
        super().__init__(f"{self.path}: cannot write ({text}){hint}")


class QualityGateError(RecengineError):
    """The new version's validation figures are worse than the live version's."""


class RunLockedError(RecengineError):
    """Another run holds the artifacts root."""
