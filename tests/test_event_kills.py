"""SIGKILL the service at random moments while a client posts events and records which were
acknowledged: after a restart every acknowledged event is in the log, once; after a nightly
run every one is in the published version's data and the consumed log, once."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from engine.config import EngineConfig
from engine.jobs.artifacts import read_manifest
from engine.jobs.nightly import run_nightly
from pipelines.dataset import FeatureSet
from pipelines.event_log import EventLog, all_events, log_path
from tests.conftest import Server, copy_root, tally


class Poster(threading.Thread):
    """Posts events (one or a few per request) until the server stops answering; keeps the
    acknowledged ones, each identified by its (user, item, ts)."""

    def __init__(self, url: str, items: list[str], start: datetime, tag: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.items, self.start_ts, self.tag = url, items, start, tag
        self.rng = random.Random(seed)
        self.acked: list[tuple[str, str, datetime, int]] = []
        self.sent = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            n = 0
            while True:
                batch = []
                for _ in range(self.rng.choice([1, 1, 1, 3])):
                    ts = self.start_ts + timedelta(milliseconds=n)
                    user = f"kill-{self.tag}-{n % 17}"
                    batch.append((user, self.rng.choice(self.items), ts))
                    n += 1
                body = [
                    {"user_id": u, "item_id": i, "event": "click", "ts": t.isoformat()}
                    for u, i, t in batch
                ]
                self.sent += len(body)
                try:
                    got = client.post("/events", json=body)
                except httpx.TransportError:
                    return  # killed: whatever was not answered is not acknowledged
                assert got.status_code == 200, got.text
                ids = got.json()["ids"]
                self.acked += [(u, i, t, e) for (u, i, t), e in zip(batch, ids, strict=True)]


def _kill_rounds(root: Path, items: list[str], start: datetime, rounds: int, seed: int) -> list:
    rng = random.Random(seed)
    acked = []
    for r in range(rounds):
        srv = Server(root, workers=2 if r % 2 else 1)
        try:
            srv.wait_ready()
            poster = Poster(srv.url, items, start + timedelta(hours=r), f"{seed}-{r}", seed + r)
            poster.start()
            time.sleep(rng.uniform(0.3, 2.0))
            srv.kill()
            poster.join(timeout=30)
            assert not poster.is_alive()
            acked += poster.acked
            tally("events: server kills while posting")
            tally("events: acknowledged before a kill", len(poster.acked))
        finally:
            srv.stop()
    return acked


def _run(published: tuple[EngineConfig, Path], tmp_path: Path, rounds: int, seed: int) -> None:
    cfg, published_root = published
    root = copy_root(published_root, tmp_path / "artifacts")
    fs = FeatureSet.load(root / "current")
    items = fs.vocabs.item.decode(pl.Series(range(1, 40), dtype=pl.Int64)).to_list()
    start = fs.as_of - timedelta(days=1)
    acked = _kill_rounds(root, items, start, rounds, seed)
    assert len(acked) > rounds  # every round got some in before its kill

    # after a restart: every acknowledged event is in the log, once
    srv = Server(root)
    try:
        srv.wait_ready()
        assert httpx.get(f"{srv.url}/version").status_code == 200
    finally:
        srv.stop()
    logged = all_events(log_path(root))
    assert logged["event_id"].is_unique().all()
    keys = logged.select("user_id", "item_id", "ts", "event_id")
    want = pl.DataFrame(
        [(u, i, t, e) for u, i, t, e in acked],
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us"),
            "id": pl.Int64,
        },
        orient="row",
    )
    found = want.join(keys, on=["user_id", "item_id", "ts"], how="left")
    assert found["event_id"].null_count() == 0  # none lost
    assert found.height == want.height  # none twice
    assert (found["event_id"] == found["id"]).all()

    # after a nightly run: in the version's data and the consumed log, once each
    result = run_nightly(cfg, root)
    assert result.published and result.version is not None
    assert read_manifest(result.version)["events_through"] >= int(want["id"].max())  # type: ignore[operator]
    log = EventLog.of_root(root)
    try:
        assert log.since(0) == []
    finally:
        log.close()
    new = FeatureSet.load(result.version)
    rows = pl.DataFrame(
        {
            "user_id": new.vocabs.user.decode(new.interactions["user_idx"]),
            "item_id": new.vocabs.item.decode(new.interactions["item_idx"]),
            "ts": new.interactions["ts"],
        }
    )
    matched = rows.join(want, on=["user_id", "item_id", "ts"], how="semi")
    assert matched.height == want.height  # each acknowledged event once, none twice
    assert matched.unique().height == want.height
    tally("events: acknowledged events checked after restart and nightly", want.height)


def test_killed_servers_lose_no_acknowledged_event(
    published: tuple[EngineConfig, Path], tmp_path: Path
) -> None:
    _run(published, tmp_path, rounds=3, seed=1)


@pytest.mark.slow
def test_twenty_kills_lose_no_acknowledged_event(
    published: tuple[EngineConfig, Path], tmp_path: Path
) -> None:
    _run(published, tmp_path, rounds=20, seed=2)
