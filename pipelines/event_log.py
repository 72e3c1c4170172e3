"""The log of events posted to the service (`recengine serve`, `POST /events`): durable before
the service acknowledges them, shared by every worker, and consumed by the nightly job only
after a version built with them is published.

An event is always in the log or in a published version's inputs, never neither:

- `EventLog.append` commits to SQLite in WAL mode with `synchronous=FULL`, so the commit
  returns only after the write-ahead log is fsynced: an acknowledged event survives a
  `kill -9` of the server. Several processes append and read at once (SQLite's file locks);
  ids increase and are never reused (AUTOINCREMENT), so a reader catches up with `since`.
- The nightly `freeze`s the log at its start: the events already consumed (`consumed/`) and
  those in the log up to its last id, in one Parquet file that is the run's input beside the
  interactions (so the run key, resume and the quality gate see fixed data).
- After publishing, `consume` writes the log's events up to the published id to
  `consumed/through-<id>.parquet` (fsynced), and only then deletes them from the log. A crash
  between the two leaves an event in both places; readers take the consumed copy and skip
  the log's rows at or below the highest consumed id, so none is read twice.

Layout under `<artifacts root>/events/`: `log.sqlite` (with SQLite's `-wal` and `-shm`),
`consumed/through-<id>.parquet`, and `frozen-<id>.parquet` while a run is under way.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from pipelines.io import atomic_path

FOLDER = "events"
LOG = "log.sqlite"
CONSUMED = "consumed"
SCHEMA = pl.Schema(
    {
        "event_id": pl.Int64(),
        "user_id": pl.String(),
        "item_id": pl.String(),
        "ts": pl.Datetime("us"),
        "event": pl.String(),
        "value": pl.Float64(),
    }
)
"""The columns of a frozen or consumed part: the data contract's, and the log's id."""

_DDL = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC
    event TEXT NOT NULL,
    value REAL
)
"""
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Event:
    """One interaction in the data contract's shape (`ts`: naive UTC)."""

    user_id: str
    item_id: str
    event: str
    ts: datetime
    value: float | None = None


def log_path(root: Path) -> Path:
    """Where the event log of an artifacts root lives."""
    return Path(root) / FOLDER / LOG


def _micros(ts: datetime) -> int:
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")  # the WAL is fsynced at every commit
    con.execute(_DDL)
    return con


class EventLog:
    """One process's handle on the log (thread-safe: one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._con = _connect(self.path)
        self._lock = threading.Lock()

    @classmethod
    def of_root(cls, root: Path) -> EventLog:
        return cls(log_path(root))

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append `events` in one transaction; returns their ids once the commit is on disk."""
        rows = [(e.user_id, e.item_id, _micros(e.ts), e.event, e.value) for e in events]
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                first = None
                for row in rows:
                    cur = con.execute(
                        "INSERT INTO events (user_id, item_id, ts, event, value) "
                        "VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                    first = cur.lastrowid if first is None else first
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        # one writer at a time (BEGIN IMMEDIATE): the ids of one append are consecutive
        return [] if first is None else list(range(first, first + len(rows)))

    def since(self, after: int) -> list[tuple[int, str, str, str]]:
        """(id, user_id, item_id, event) of every event with an id above `after`, in order."""
        with self._lock:
            return self._con.execute(
                "SELECT id, user_id, item_id, event FROM events WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()

    def last_id(self) -> int:
        """The highest id ever given (0 for a new log): ids are never reused."""
        with self._lock:
            row = self._con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            found = row.fetchone()
        return int(found[0]) if found else 0

    def frame(self, *, after: int = 0, through: int | None = None) -> pl.DataFrame:
        """The log's events with ids in (after, through], as `SCHEMA`."""
        top = through if through is not None else 2**62
        with self._lock:
            rows = self._con.execute(
                "SELECT id, user_id, item_id, ts, event, value FROM events "
                "WHERE id > ? AND id <= ? ORDER BY id",
                (after, top),
            ).fetchall()
        cols: list[Sequence[object]] = list(zip(*rows, strict=True)) if rows else [[]] * 6
        return pl.DataFrame(
            {
                "event_id": cols[0],
                "user_id": cols[1],
                "item_id": cols[2],
                "ts": cols[3],
                "event": cols[4],
                "value": cols[5],
            },
            schema=pl.Schema({**SCHEMA, "ts": pl.Int64()}),
        ).with_columns(pl.col("ts").cast(pl.Datetime("us")))

    def delete_through(self, through: int) -> int:
        """Delete the events with ids up to `through` (consumed); returns how many."""
        with self._lock:
            cur = self._con.execute("DELETE FROM events WHERE id <= ?", (through,))
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return cur.rowcount


def _parts(folder: Path) -> list[Path]:
    return sorted((folder / CONSUMED).glob("through-*.parquet"))


def _through(part: Path) -> int:
    return int(part.stem.removeprefix("through-"))


def consumed_through(folder: Path) -> int:
    """The highest event id already in a consumed part (0 when there is none)."""
    parts = _parts(folder)
    return _through(parts[-1]) if parts else 0


def all_events(log: Path, *, through: int | None = None) -> pl.DataFrame:
    """Every event of the log at `log`: the consumed parts beside it, then the log's rows
    above them (up to `through`), each event once."""
    folder = log.parent
    parts = _parts(folder)
    consumed = (
        pl.concat([pl.read_parquet(p).cast(SCHEMA) for p in parts])
        if parts
        else pl.DataFrame(schema=SCHEMA)
    )
    if not log.is_file():
        return consumed
    with closing(EventLog(log)) as events:
        live = events.frame(after=consumed_through(folder), through=through)
    return pl.concat([consumed, live])


@dataclass(frozen=True)
class Frozen:
    """A nightly run's copy of the events: every event up to `through`, in `path`."""

    path: Path
    through: int
    count: int


def freeze(log: Path) -> Frozen | None:
    """Copy every event of the log (consumed and pending, up to its last id) into
    `frozen-<id>.parquet` beside it: a run's fixed input. None when there are none."""
    folder = log.parent
    if not log.is_file() and not _parts(folder):
        return None
    through = consumed_through(folder)
    if log.is_file():
        with closing(EventLog(log)) as events:
            through = max(through, events.last_id())
    frame = all_events(log, through=through).rechunk()  # the same events, the same bytes
    if not frame.height:
        return None
    for old in folder.glob("frozen-*.parquet"):
        old.unlink(missing_ok=True)
    path = folder / f"frozen-{through:012d}.parquet"
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd")
    return Frozen(path, through, frame.height)


def consume(log: Path, through: int) -> int:
    """After a version built with the events up to `through` is published: move them from
    the log to a consumed part (written and fsynced first), then drop the frozen copy.
    Returns how many events left the log."""
    folder = log.parent
    if through <= 0 or not log.is_file():
        return 0
    with closing(EventLog(log)) as events:
        done = consumed_through(folder)
        if through > done:
            part = events.frame(after=done, through=through)
            _durable_parquet(part, folder / CONSUMED / f"through-{through:012d}.parquet")
        left = events.delete_through(through)
    for old in folder.glob("frozen-*.parquet"):
        if int(old.stem.removeprefix("frozen-")) <= through:
            old.unlink(missing_ok=True)
    return left


def _durable_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write, fsync the file, rename, fsync the folder: on disk before the log lets go."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_events(path: Path) -> pl.DataFrame:
    """The events named by `[data] events`: a frozen Parquet part, or a log (read whole)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path).cast(SCHEMA)
    return all_events(path)
