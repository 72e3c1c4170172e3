"""The service's Prometheus metrics (prometheus_client): requests and their latency by
endpoint, events ingested, the version loaded and reloads.

With several workers (`recengine serve --workers N`) each worker is its own process: the
service sets `PROMETHEUS_MULTIPROC_DIR` and `/metrics` adds up every worker's files
(prometheus_client's multiprocess mode), so a scrape sees the whole service whichever worker
answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

REQUESTS = Counter(
    "recengine_requests_total", "HTTP requests answered", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "recengine_request_seconds",
    "Time from a request's arrival to its response",
    ["endpoint"],
    buckets=BUCKETS,
)
EVENTS = Counter("recengine_events_total", "Events appended to the event log")
RELOADS = Counter("recengine_reloads_total", "Versions swapped in while serving")
RELOAD_FAILURES = Counter(
    "recengine_reload_failures_total", "Versions that could not be loaded (the old one served on)"
)
VERSION = Gauge(
    "recengine_version_loaded",
    "1 for the version a worker serves",
    ["version"],
    multiprocess_mode="liveall",
)


def set_version(old: str | None, new: str) -> None:
    if old is not None and old != new:
        VERSION.labels(version=old).set(0)
    VERSION.labels(version=new).set(1)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
