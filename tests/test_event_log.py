"""The event log: ids that increase and are never reused, durable commits seen by a second
handle (another worker), a frozen copy that is the same file for the same events, and
consumption that never loses or doubles an event, even when it stops half-way; and the
nightly job reading the log's events with the interactions and letting go of them only
after publishing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from engine.config import EngineConfig
from engine.jobs.artifacts import read_manifest
from engine.jobs.nightly import run_nightly
from pipelines.dataset import FeatureSet
from pipelines.event_log import (
    CONSUMED,
    Event,
    EventLog,
    _durable_parquet,
    all_events,
    consume,
    freeze,
    log_path,
)
from pipelines.io import sha256_file
from tests.conftest import copy_root

T0 = datetime(2026, 3, 1, 12)


def _events(n: int, user: str = "u", start: int = 0) -> list[Event]:
    return [
        Event(user, f"i{k}", "click", T0 + timedelta(seconds=k)) for k in range(start, start + n)
    ]


def test_ids_increase_are_never_reused_and_a_second_handle_sees_every_commit(
    tmp_path: Path,
) -> None:
    path = log_path(tmp_path)
    a, b = EventLog(path), EventLog(path)  # two workers' handles
    try:
        assert a.append(_events(3)) == [1, 2, 3]
        assert b.append(_events(2, "v")) == [4, 5]
        assert [r[0] for r in a.since(0)] == [1, 2, 3, 4, 5]
        assert a.since(3) == [(4, "v", "i0", "click"), (5, "v", "i1", "click")]
        assert a.delete_through(5) == 5
        assert b.append(_events(1)) == [6]  # not 1 again
        assert a.last_id() == 6
        frame = b.frame()
        assert frame["event_id"].to_list() == [6]
        assert frame["ts"].to_list() == [T0]
    finally:
        a.close()
        b.close()


def test_consume_moves_events_to_a_part_and_a_stop_half_way_doubles_none(
    tmp_path: Path,
) -> None:
    path = log_path(tmp_path)
    log = EventLog(path)
    log.append(_events(5))
    frozen = freeze(path)
    assert frozen is not None and frozen.through == 5 and frozen.count == 5
    log.append(_events(2, start=5))  # after the freeze: stays in the log
    assert consume(path, 5) == 5
    assert not frozen.path.exists()
    assert [r[0] for r in log.since(0)] == [6, 7]
    assert all_events(path)["event_id"].to_list() == [1, 2, 3, 4, 5, 6, 7]

    # stopped after writing the consumed part, before deleting from the log
    part = log.frame(after=5, through=7)
    _durable_parquet(part, tmp_path / "events" / CONSUMED / "through-000000000007.parquet")
    assert all_events(path)["event_id"].to_list() == [1, 2, 3, 4, 5, 6, 7]
    assert consume(path, 7) == 2  # the rerun finishes the delete and writes nothing twice
    assert len(list((tmp_path / "events" / CONSUMED).glob("*.parquet"))) == 2
    assert all_events(path)["event_id"].to_list() == [1, 2, 3, 4, 5, 6, 7]
    log.close()


def test_the_same_events_freeze_to_the_same_file(tmp_path: Path) -> None:
    """The run key hashes the frozen file: once consumed, the same events must give the
    same bytes, or every later run would see changed inputs."""
    path = log_path(tmp_path)
    log = EventLog(path)
    log.append(_events(40))
    first = freeze(path)
    assert first is not None
    digest = sha256_file(first.path)
    consume(path, first.through)
    again = freeze(path)
    assert again is not None and again.through == first.through
    assert sha256_file(again.path) == digest
    log.close()


def test_freeze_of_an_empty_log_is_nothing(tmp_path: Path) -> None:
    assert freeze(log_path(tmp_path)) is None
    EventLog(log_path(tmp_path)).close()
    assert freeze(log_path(tmp_path)) is None


def test_the_nightly_reads_the_events_and_lets_go_of_them_after_publishing(
    published: tuple[EngineConfig, Path], tmp_path: Path
) -> None:
    cfg, published_root = published
    root = copy_root(published_root, tmp_path / "artifacts")
    before = read_manifest(root / "current")
    fs = FeatureSet.load(root / "current")
    as_of = fs.as_of
    user = fs.vocabs.user.decode(pl.Series([1], dtype=pl.Int64))[0]
    items = fs.vocabs.item.decode(pl.Series([3, 4, 5], dtype=pl.Int64)).to_list()
    log = EventLog.of_root(root)
    events = [
        Event(user, items[0], "purchase", as_of - timedelta(hours=2)),
        Event("session-new", items[1], "view", as_of - timedelta(hours=1)),
        Event("session-new", items[2], "click", as_of - timedelta(minutes=30)),
        Event(user, "no-longer-listed", "view", as_of - timedelta(minutes=20)),
    ]
    ids = log.append(events)
    result = run_nightly(cfg, root)
    assert result.published and result.version is not None
    manifest = read_manifest(result.version)
    assert manifest["events_through"] == ids[-1]
    assert "events" in json.dumps(manifest["inputs"])
    assert before.get("events_through", 0) == 0
    # the log let go of them; the consumed part holds each once
    assert log.since(0) == []
    kept = all_events(log_path(root))
    assert kept["event_id"].to_list() == ids
    # the version was built with them: the new session is a user, with its two items
    new = FeatureSet.load(result.version)
    session = new.vocabs.user.encode_series(pl.Series(["session-new"]))[0]
    assert session > 0
    hist = new.history.filter(pl.col("user_idx") == session)["history"].to_list()[0]
    assert new.vocabs.item.decode(pl.Series(hist, dtype=pl.Int64)).to_list() == items[1:]
    u = new.vocabs.user.encode_series(pl.Series([user]))[0]
    mine = new.interactions.filter(pl.col("user_idx") == u)
    bought = new.vocabs.item.encode_series(pl.Series([items[0]]))[0]
    assert mine.filter((pl.col("item_idx") == bought) & (pl.col("ts") == events[0].ts)).height == 1
    # nothing new: the same frozen input, so the run publishes nothing
    again = run_nightly(cfg, root)
    assert again.reason == "unchanged" and again.version == result.version
    log.close()
