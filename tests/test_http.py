"""The HTTP service (`recengine serve`) as a real server process on a loopback port: every
endpoint answers what the in-process API answers; a posted event changes that user's next
list; malformed requests get 4xx, never 5xx; the token guards /events and /admin; the
OpenAPI document lists every endpoint; `current` moving is followed without a failed call."""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from engine.config import EngineConfig
from engine.jobs.artifacts import current_version, switch_current
from pipelines.event_log import EventLog, all_events, log_path
from serving import Recommender
from serving.http import ENDPOINTS
from serving.schemas import RecommendRequest
from tests.conftest import Server, copy_root, tally

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def root(published: tuple[EngineConfig, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_root(published[1], tmp_path_factory.mktemp("http") / "artifacts")


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Server]:
    token = root.parent / "token"
    token.write_text(TOKEN + "\n")
    srv = Server(root, token_file=token)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _clean(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """In-process rows as the service writes them (absent fields left out)."""
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


def _last_ts(root: Path) -> datetime:
    rec = Recommender.load(root)
    ts = rec._state.fs.as_of
    assert isinstance(ts, datetime)
    return ts - timedelta(hours=1)


def test_every_endpoint_answers_as_the_in_process_api(client: httpx.Client, root: Path) -> None:
    rec = Recommender.load(root, events=True)
    st = rec._state
    users = [st.users.id_of(u) for u in range(1, 13)]
    for user in users:
        for kind in ("product", "ad", "mixed"):
            got = client.get("/recommend", params={"user_id": user, "k": 7, "kind": kind})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["version"] == rec.version and body["kind"] == kind
            assert body["items"] == _clean(rec.recommend(user, k=7, kind=kind))
    explained = client.get("/recommend", params={"user_id": users[0], "explain": "true"}).json()
    assert explained["items"] == _clean(rec.recommend(users[0], explain=True))
    assert all(r["why"] for r in explained["items"])

    items = [st.items.id_of(i) for i in np.flatnonzero(st.ctx.eligible)[:40].tolist()]
    request = {
        "history": items[:3],
        "user_features": {"country": "de"},
        "exclude": items[3:8],
        "filters": {"max_price": 80.0},
        "k": 9,
    }
    got = client.post("/recommend", json=request)
    assert got.status_code == 200, got.text
    want = rec.recommend(
        history=items[:3],
        user_features={"country": "de"},
        exclude=items[3:8],
        filters={"max_price": 80.0},
        k=9,
    )
    assert got.json()["items"] == _clean(want) and want
    known = client.post("/recommend", json={"user_id": users[1], "exclude": items[:5], "k": 5})
    assert known.json()["items"] == _clean(rec.recommend(users[1], exclude=items[:5], k=5))

    for kind in ("product", "ad"):
        batch = client.post(
            "/recommend/batch", json={"user_ids": [*users, "nobody"], "k": 4, "kind": kind}
        )
        assert batch.status_code == 200, batch.text
        frame = rec.recommend_batch([*users, "nobody"], k=4, kind=kind)
        lists = batch.json()["lists"]
        assert [x["user_id"] for x in lists] == [*users, "nobody"]
        for entry in lists:
            want_rows = frame.filter(pl.col("user_id") == entry["user_id"]).drop("user_id")
            assert entry["items"] == want_rows.to_dicts()

    similar = client.get("/similar", params={"item_id": items[0], "k": 6})
    assert similar.json()["items"] == rec.similar_items(items[0], 6)
    assert client.get("/similar", params={"item_id": "no-such-item"}).json()["items"] == []
    tally("http: answers compared with the in-process API", 12 * 3 + 5 + 2 * 13 + 2)


def _covisit_case(root: Path) -> tuple[str, str, str]:
    """A user, the item listed first for them, and an item co-visited with it that enters
    their list once they click the first (found on the in-process path)."""
    st = Recommender.load(root)._state
    cov = st.tables.covisit
    assert cov is not None
    for u in range(1, st.fs.vocabs.user.size):
        before = [r.item for r in st.scorer.user_list(u, k=10)]
        x = before[0]
        after = [r.item for r in st.scorer.user_list(u, k=10, live=np.array([x]))]
        neighbours = set(cov.cols["neighbour"][cov.indptr[x] : cov.indptr[x + 1]].tolist())
        entered = [i for i in after if i not in before and i in neighbours]
        if entered:
            return st.users.id_of(u), st.items.id_of(x), st.items.id_of(entered[0])
    raise AssertionError("no user's list takes in a co-visited item after a click")


def test_a_posted_event_changes_that_users_next_list(client: httpx.Client, root: Path) -> None:
    user, clicked, covisited = _covisit_case(root)
    ts = _last_ts(root).isoformat()

    def listed(uid: str) -> list[str]:
        got = client.get("/recommend", params={"user_id": uid, "k": 10})
        assert got.status_code == 200, got.text
        return [r["item_id"] for r in got.json()["items"]]

    assert covisited not in listed(user)
    event = {"user_id": user, "item_id": clicked, "event": "click", "ts": ts}
    posted = client.post("/events", json=event, headers=AUTH)
    assert posted.status_code == 200, posted.text
    assert posted.json()["accepted"] == 1
    after = listed(user)
    assert covisited in after
    assert after == [r["item_id"] for r in Recommender.load(root, events=True).recommend(user)]

    # an anonymous session: its events are its history
    session = "session-7f3a"
    stranger = listed(session)
    two = [{"user_id": session, "item_id": i, "event": "view", "ts": ts} for i in stranger[:2]]
    assert client.post("/events", json=two, headers=AUTH).json()["accepted"] == 2
    shaped = listed(session)
    assert not set(stranger[:2]) & set(shaped)  # seen now
    assert shaped == [r["item_id"] for r in Recommender.load(root).recommend(history=stranger[:2])]
    # impressions are logged but are not positives: no history, no change
    seen = {"user_id": "session-imp", "item_id": after[0], "event": "impression", "ts": ts}
    assert client.post("/events", json=seen, headers=AUTH).status_code == 200
    assert listed("session-imp") == stranger
    rows = all_events(log_path(root))
    assert rows.filter(pl.col("user_id") == user)["item_id"].to_list() == [clicked]


def test_events_are_checked(client: httpx.Client) -> None:
    bad = client.post(
        "/events", json={"user_id": "u", "item_id": "no-such-item", "event": "click"}, headers=AUTH
    )
    assert bad.status_code == 400 and "events[0].item_id" in bad.json()["detail"]
    wrong = client.post(
        "/events", json={"user_id": "u", "item_id": "x", "event": "sneeze"}, headers=AUTH
    )
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"][-1] == "event"


def test_the_token_guards_events_and_admin(client: httpx.Client, root: Path) -> None:
    item = Recommender.load(root)._state.items.id_of(1)
    event = {"user_id": "token-check", "item_id": item, "event": "view"}
    for path, body in (("/events", event), ("/admin/reload", None)):
        assert client.post(path, json=body).status_code == 401
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
        assert client.post(path, json=body, headers=wrong).status_code == 401
        assert client.post(path, json=body, headers={"Authorization": TOKEN}).status_code == 401
        assert client.post(path, json=body, headers=AUTH).status_code == 200
    assert client.get("/recommend", params={"user_id": "token-check"}).status_code == 200


def test_the_openapi_document_lists_every_endpoint(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert set(ENDPOINTS) <= set(doc["paths"])
    assert {"get", "post"} <= set(doc["paths"]["/recommend"])
    assert "RecommendRequest" in doc["components"]["schemas"]


def test_health_readiness_version_and_metrics(client: httpx.Client, root: Path) -> None:
    live = current_version(root)
    assert live is not None
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "version": live.name}
    assert client.get("/version").json()["version"] == live.name
    text = client.get("/metrics").text
    assert 'recengine_requests_total{endpoint="/recommend",method="GET",status="200"}' in text
    assert 'recengine_request_seconds_bucket{endpoint="/recommend",le="0.005"}' in text
    assert f'recengine_version_loaded{{version="{live.name}"}} 1.0' in text
    assert "recengine_events_total" in text


BROKEN: dict[str, object] = {
    "user_id": 12,
    "k": 0,
    "kind": "all",
    "exclude": [["nested"]],
    "history": [{"item": 1}],
    "filters": {"min_price": "cheap"},
    "extra": 1,
}


def _malformed(rng: random.Random, user: str, item: str) -> tuple[str, str, dict[str, object]]:
    """(method, path, httpx keyword arguments) of one malformed request."""

    def junk() -> object:
        return rng.choice(
            [
                None,
                -1,
                0,
                10**30,
                1.5,
                float("inf"),
                "",
                "x" * 300,
                "☃" * 5,
                [],
                [1, 2],
                {},
                {"a": 1},
                True,
                "10; DROP TABLE events",
            ]
        )

    form = rng.randrange(9)
    if form == 0:  # a query string with a bad value or a missing user_id
        params: dict[str, object] = {"user_id": user, "k": 5, "kind": "product"}
        key = rng.choice(["user_id", "k", "kind", "explain"])
        bad = rng.choice(["", "abc", "-3", "1001", "1e3", "product!", "2.5", "x" * 300])
        if key == "user_id" and rng.random() < 0.5:
            del params["user_id"]
        else:
            params[key] = bad if key != "user_id" else ("" if rng.random() < 0.5 else "x" * 300)
        return "GET", "/recommend", {"params": params}
    if form == 1:
        params = {"item_id": rng.choice(["", "x" * 300]), "k": rng.choice([0, -1, 5000, "y"])}
        return "GET", "/similar", {"params": params}
    if form == 2:  # not JSON at all, or cut short
        raw = rng.choice(
            [
                b"{",
                b'{"user_id": ',
                b"\xff\xfe\x00",
                b"[[[[[[",
                bytes(rng.randrange(256) for _ in range(40)),
                b"[" * 5000 + b"]" * 5000,
                b"null",
                b'"just a string"',
                b"12",
            ]
        )
        path = rng.choice(["/recommend", "/recommend/batch", "/events"])
        headers = {"content-type": "application/json", **AUTH}
        return "POST", path, {"content": raw, "headers": headers}
    if form == 3:  # a valid request with one field broken
        body: dict[str, object] = {"user_id": user, "k": 5, "kind": "mixed", "exclude": [item]}
        key = rng.choice(["user_id", "k", "kind", "exclude", "history", "filters", "extra"])
        body[key] = junk() if key != "extra" else 1
        if key == "filters":
            body[key] = {rng.choice(["min_price", "brand", "colour", "category"]): junk()}
        try:  # still valid (None or an in-range value drawn): break it for sure
            RecommendRequest.model_validate(body)
            body[key] = BROKEN[key]
        except ValidationError:
            pass
        return "POST", "/recommend", {"json": body}
    if form == 4:  # neither a user nor a history
        return "POST", "/recommend", {"json": {"k": rng.randrange(1, 20)}}
    if form == 5:
        body = {"user_ids": rng.choice([[], [1, 2], "u1", [user] * 1001, None]), "k": 3}
        return "POST", "/recommend/batch", {"json": body}
    if form == 6:  # events with a broken field
        event: dict[str, object] = {"user_id": user, "item_id": item, "event": "click"}
        key = rng.choice(["user_id", "item_id", "event", "ts", "value", "extra"])
        event[key] = rng.choice(
            {
                "user_id": ["", None, 7, "u" * 300],
                "item_id": ["", None, 7, "no-such-item"],
                "event": ["sneeze", "", None, 3],
                "ts": ["yesterday", "1800-01-01T00:00:00", "2999-01-01T00:00:00", 1e20, []],
                "value": ["much", float("inf"), [], {}],
                "extra": [1],
            }[key]
        )
        many = rng.random() < 0.3
        payload: object = [event] * rng.randrange(1, 4) if many else event
        if rng.random() < 0.1:
            payload = [event] * 1001
        return "POST", "/events", {"json": payload, "headers": AUTH}
    if form == 7:  # too large
        return "POST", "/recommend", {"content": b" " * (1 << 20) + b"{}", "headers": {}}
    return "GET", rng.choice(["/recommend", "/similar"]), {"params": {"k": "5"}}


def test_a_thousand_malformed_requests_get_4xx_and_no_5xx(client: httpx.Client, root: Path) -> None:
    st = Recommender.load(root)._state
    user, item = st.users.id_of(1), st.items.id_of(1)
    rng = random.Random(11)
    statuses: dict[int, int] = {}
    for _ in range(1000):
        method, path, kwargs = _malformed(rng, user, item)
        if "json" in kwargs:  # Python's encoder writes NaN and Infinity, as some clients do
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
            kwargs["headers"] = {"content-type": "application/json", **AUTH}
        got = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        statuses[got.status_code] = statuses.get(got.status_code, 0) + 1
        assert 400 <= got.status_code < 500, (method, path, kwargs, got.status_code, got.text)
        assert "Traceback" not in got.text
        detail = got.json()["detail"]
        assert detail, got.text
        if got.status_code == 422:  # pydantic names the field
            assert all(d["loc"] for d in detail)
    tally("http: malformed requests (all 4xx)", 1000)
    assert len(statuses) >= 3  # 400, 413, 422 at least: the forms reach several checks


def test_random_printable_query_strings_never_give_5xx(client: httpx.Client) -> None:
    rng = random.Random(5)
    for _ in range(200):
        q = "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 60)))
        got = client.get(f"/recommend?{quote(q, safe='=&%+')}")
        assert got.status_code < 500, (q, got.text)


def test_the_service_follows_current_without_a_failed_call(
    client: httpx.Client, root: Path
) -> None:
    """A second version (a copy under a new name) is published; the watcher swaps it in
    within its interval while a client calls all along; `POST /admin/reload` swaps back."""
    first = current_version(root)
    assert first is not None
    second = first.parent / (first.name[:-1] + ("x" if first.name[-1] != "x" else "y"))
    copy_root(first, second)
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["files"]
    user = Recommender.load(root)._state.users.id_of(3)
    switch_current(root, second)
    seen: set[str] = set()
    end = time.monotonic() + 10
    while second.name not in seen and time.monotonic() < end:
        got = client.get("/recommend", params={"user_id": user})
        assert got.status_code == 200, got.text
        seen.add(got.json()["version"])
    assert second.name in seen
    switch_current(root, first)
    back = client.post("/admin/reload", headers=AUTH).json()
    assert back["version"] == first.name
    assert client.get("/version").json()["reloads"] >= 2


def test_a_server_with_no_version_is_not_ready_until_one_is_published(
    root: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "artifacts"
    empty.mkdir()
    srv = Server(empty)
    try:
        srv.wait_ready(status=503)
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        got = httpx.get(f"{srv.url}/recommend", params={"user_id": "u"})
        assert got.status_code == 503 and "no version" in got.json()["detail"]
        live = current_version(root)
        assert live is not None
        copy_root(live, empty / "versions" / live.name)
        switch_current(empty, empty / "versions" / live.name)
        srv.wait_ready(timeout=30)
        assert httpx.get(f"{srv.url}/version").json()["version"] == live.name
    finally:
        srv.stop()


def test_events_go_to_the_log_in_the_artifacts_root(root: Path) -> None:
    log = EventLog.of_root(root)
    try:
        assert log.last_id() >= 3
    finally:
        log.close()


def test_every_worker_sees_every_event(root: Path, tmp_path: Path) -> None:
    """Two worker processes: an event acknowledged by either shapes the very next request,
    whichever worker takes it (each request reads the shared log first)."""
    work = copy_root(root, tmp_path / "artifacts")
    srv = Server(work, workers=2)
    try:
        srv.wait_ready()
        rec = Recommender.load(work)
        stranger = [r["item_id"] for r in rec.recommend("nobody", k=10)]
        ts = _last_ts(work).isoformat()
        for n in range(20):
            session = f"two-workers-{n}"
            with httpx.Client(base_url=srv.url) as one:  # a new connection each time
                event = {"user_id": session, "item_id": stranger[n % 3], "event": "view", "ts": ts}
                assert one.post("/events", json=event).status_code == 200
            with httpx.Client(base_url=srv.url) as other:
                got = other.get("/recommend", params={"user_id": session, "k": 10}).json()
            assert stranger[n % 3] not in [r["item_id"] for r in got["items"]]
        text = httpx.get(f"{srv.url}/metrics").text
        pids = {
            line.split('pid="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("recengine_version_loaded{")
        }
        assert len(pids) == 2  # both workers loaded a version and report into one scrape
        assert "recengine_events_total 20.0" in text
    finally:
        srv.stop()
