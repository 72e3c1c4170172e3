"""`recengine serve`: the online API (`serving.Recommender`) over HTTP, FastAPI on uvicorn.

Every endpoint calls the same `Recommender` an in-process caller uses (one request path, not
a copy), pinned to one version per request, so an answer is always one version's and names
it. `POST /events` appends to the artifacts root's event log (`pipelines.event_log`), durable
before the 200, and the user's next list reads it. A watcher thread swaps in the version
`current` points at (calls in flight finish on the old one); `POST /admin/reload` does the same
at once.

    >>> app = create_app(Settings(artifacts=Path("artifacts"), token="s3cret"))
    >>> # or, as `recengine serve` does: uvicorn serving.http:app_from_env --factory

One user's list (`/recommend`, `/similar`: ~3 ms) is computed on the event loop itself, one
at a time per worker: the request path holds the interpreter lock for most of a call, and a
worker thread handing it back and forth with the loop at every native call answered 172
requests a second with 5.8 ms of CPU each, against 214 and 4.7 ms on the loop (the sample
version, `wrk` with 4 connections). So a worker is one core; `--workers` adds cores. A post
of events is appended on the loop too (the fsync'd commit takes 0.3 ms here); batches and a
reload that loads a version from disk run on `--threads` threads beside it.

Limits: lists of at most `MAX_K`, at most `MAX_LIST` ids in a history, exclude list, batch or
post of events, bodies of at most `Settings.max_body` bytes (413 beyond).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from engine.jobs.artifacts import current_version
from pipelines.errors import RecengineError
from pipelines.event_log import Event
from serving import metrics
from serving.recommender import Pinned, Recommender
from serving.schemas import (
    MAX_ID,
    MAX_K,
    MAX_LIST,
    BatchRequest,
    BatchResponse,
    EventIn,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    SimilarResponse,
    UserList,
    VersionResponse,
)

log = logging.getLogger(__name__)

ENV = "RECENGINE_SERVE"
"""The settings, as JSON, for uvicorn's worker processes (`app_from_env`)."""
ENDPOINTS = (
    "/recommend",
    "/recommend/batch",
    "/similar",
    "/events",
    "/healthz",
    "/readyz",
    "/version",
    "/metrics",
    "/admin/reload",
)


LIBRARY_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 in the service's processes unless given. A request works on one user's small
arrays and requests run side by side, so an OpenMP or BLAS team inside one call only spins on
the other core: on the sample version one call took 3.0 ms and 6.0 ms of CPU with two
threads, 3.4 ms and 3.4 ms of CPU with one. The libraries read these when they load."""


def unset_library_threads() -> dict[str, str]:
    """`LIBRARY_THREADS` not set in the environment, each with the service's value."""
    return {name: "1" for name in LIBRARY_THREADS if name not in os.environ}


@dataclass(frozen=True)
class Settings:
    artifacts: Path
    token: str | None = None  # required on /events and /admin/* when set
    reload_interval: float = 1.0  # seconds between looks at `current`
    max_body: int = 1 << 20  # bytes
    threads: int = 1  # batches one worker computes at once, beside the event loop

    def to_env(self) -> str:
        return json.dumps({**asdict(self), "artifacts": str(self.artifacts)})

    @classmethod
    def from_env(cls) -> Settings:
        raw = json.loads(os.environ[ENV])
        return cls(**{**raw, "artifacts": Path(raw["artifacts"])})


class Service:
    """What the app holds: the recommender (none until a version is published) and the
    thread that follows `current`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rec: Recommender | None = None
        self.reloads = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the first version, or swap in the one `current` points at now; True when the
        version served changed."""
        with self._lock:
            root = self.settings.artifacts
            if self.rec is None:
                if current_version(root) is None:
                    return False
                self.rec = Recommender.load(root, events=True)
                metrics.set_version(None, self.rec.version)
                return True
            old = self.rec.version
            if not self.rec.reload():
                return False
            self.reloads += 1
            metrics.RELOADS.inc()
            metrics.set_version(old, self.rec.version)
            return True

    def watch(self) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            try:
                self.refresh()
            except Exception:  # a broken version: keep serving the loaded one
                metrics.RELOAD_FAILURES.inc()
                log.exception("reload failed; still serving the loaded version")

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> Recommender:
        """The recommender (503 before a version is published)."""
        if self.rec is None:
            raise HTTPException(503, "no version loaded yet (run recengine nightly)")
        return self.rec

    def pinned(self) -> Pinned:
        """The version answering this request."""
        return self.ready().pinned()


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Guard:
    """ASGI middleware: refuses bodies over `max_body` (413, also for chunked bodies) and
    counts every request and its latency by endpoint."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = 500
        size = dict(scope["headers"]).get(b"content-length")

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if size is not None and (not size.isdigit() or int(size) > self.max_body):
                bad = not size.isdigit()
                response = JSONResponse(
                    {"detail": "bad Content-Length" if bad else _TooLarge(self.max_body).detail},
                    status_code=400 if bad else 413,
                )
                await response(scope, receive, counted_send)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise _TooLarge(self.max_body)
                return message

            await self.app(scope, limited_receive, counted_send)
        finally:
            metrics.REQUESTS.labels(endpoint, scope["method"], str(status)).inc()
            metrics.LATENCY.labels(endpoint).observe(perf_counter() - t0)


def create_app(settings: Settings) -> FastAPI:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # batches and events run on this many threads; one user's list runs on the event loop
        to_thread.current_default_thread_limiter().total_tokens = settings.threads
        try:
            await run_in_threadpool(service.refresh)
        except RecengineError:
            log.exception("the published version could not be loaded; retrying")
        watcher = threading.Thread(target=service.watch, name="recengine-reload", daemon=True)
        watcher.start()
        yield
        service.stop()

    app = FastAPI(
        title="recengine",
        summary="Product and ad lists, similar items and real-time events over HTTP.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Guard, max_body=settings.max_body)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(TypeError)
    async def bad_type(_: Request, exc: TypeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        """The bearer token, compared in constant time, when the service has one."""
        token = settings.token
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ")
        if not (authorization or "").startswith("Bearer ") or not hmac.compare_digest(
            given.encode(), token.encode()
        ):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get(
        "/recommend",
        response_model=RecommendResponse,
        response_model_exclude_none=True,
        tags=["lists"],
    )
    async def recommend_get(
        user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Literal["product", "ad", "mixed"] = "product",
        explain: bool = False,
    ) -> dict[str, object]:
        """A known user's list (a user the version does not know: by their events since, or
        the list for a stranger)."""
        view = service.pinned()
        items = view.recommend(user_id, k=k, kind=kind, explain=explain)
        return {"version": view.version, "user_id": user_id, "kind": kind, "items": items}

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        response_model_exclude_none=True,
        tags=["lists"],
    )
    async def recommend_post(body: RecommendRequest) -> dict[str, object]:
        """A list for a user id or a history, with exclusions, filters and user features."""
        view = service.pinned()
        filters = body.filters.model_dump(exclude_none=True) if body.filters else None
        items = view.recommend(
            body.user_id,
            k=body.k,
            kind=body.kind,
            exclude=body.exclude,
            filters=filters,
            history=body.history,
            user_features=body.user_features,
            explain=body.explain,
        )
        return {"version": view.version, "user_id": body.user_id, "kind": body.kind, "items": items}

    @app.post(
        "/recommend/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        tags=["lists"],
    )
    def recommend_batch(body: BatchRequest) -> dict[str, object]:
        """The version's lists for many users at once, in the order given."""
        view = service.pinned()
        frame = view.recommend_batch(body.user_ids, k=body.k, kind=body.kind)
        by_user: dict[str, list[dict[str, object]]] = {u: [] for u in body.user_ids}
        for row in frame.iter_rows(named=True):
            by_user[row.pop("user_id")].append(row)
        lists = [
            UserList.model_validate({"user_id": u, "items": by_user[u]})
            for u in dict.fromkeys(body.user_ids)
        ]
        return {"version": view.version, "kind": body.kind, "lists": lists}

    @app.get(
        "/similar", response_model=SimilarResponse, response_model_exclude_none=True, tags=["lists"]
    )
    async def similar(
        item_id: Annotated[str, Query(min_length=1, max_length=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, object]:
        """Items nearest to an item by two-tower vector (none for an unknown item)."""
        view = service.pinned()
        return {
            "version": view.version,
            "item_id": item_id,
            "items": view.similar_items(item_id, k),
        }

    @app.post(
        "/events",
        response_model=EventsResponse,
        dependencies=[Depends(authorised)],
        tags=["events"],
    )
    async def events(
        body: Annotated[
            EventIn | Annotated[list[EventIn], Field(min_length=1, max_length=MAX_LIST)], Body()
        ],
    ) -> dict[str, object]:
        """Append one event or many to the log: on disk before this answers, and in the
        user's next list."""
        rec = service.ready()
        given = body if isinstance(body, list) else [body]
        now = datetime.now(UTC).replace(tzinfo=None)
        ids = rec.record(
            [Event(e.user_id, e.item_id, e.event, e.ts or now, e.value) for e in given]
        )
        metrics.EVENTS.inc(len(ids))
        return {"accepted": len(ids), "ids": ids}

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """A version is loaded (503 until one is)."""
        if service.rec is None:
            return JSONResponse({"status": "no version loaded"}, status_code=503)
        return JSONResponse({"status": "ready", "version": service.rec.version})

    @app.get("/version", response_model=VersionResponse, tags=["operations"])
    async def version() -> dict[str, object]:
        rec = service.ready()
        view = rec.pinned()
        return {
            "version": view.version,
            "events_through": view.events_through,
            "live_users": rec.live_users,
            "reloads": service.reloads,
        }

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus text: requests and latency by endpoint, events, version, reloads."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(authorised)],
        tags=["operations"],
    )
    def reload() -> dict[str, object]:
        """Swap in the version `current` points at now (the watcher does so within its
        interval anyway)."""
        try:
            changed = service.refresh()
        except RecengineError as exc:
            raise HTTPException(409, f"the version was refused: {exc}") from None
        return {"changed": changed, "version": service.pinned().version}

    return app


def app_from_env() -> FastAPI:
    """The app for uvicorn's `--factory` (each worker process builds its own)."""
    return create_app(Settings.from_env())
