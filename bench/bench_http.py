"""Benchmark 4d, the HTTP service under a bounded load while its version flips: `recengine
serve` on a copy of an artifacts root, driven on loopback by an async client (aiohttp) at a fixed
request rate for --seconds (at most 60), while `current` switches between two published
versions every --flip-every seconds. It stops by itself: nothing is sent after the last
scheduled time, and a request not answered 10 s after its scheduled time is an error.

Set-up. The root is copied into a temporary folder (`shutil.copytree(symlinks=True)`) with only
what the service reads there: `current`, the event log (`events/`) and the two versions used
(other versions, and anything else kept under the root such as benchmark outputs, are left
out), so the given root is never touched; the copy is removed at the end. The two versions are
`current` and --second (a version folder, or its name under the root's `versions/`), else the
newest other version that stores its request tables. A version from before they were stored is
not picked: each process that loads it rebuilds them, with co-visitation and transition weights
that differ in their last bits from one load to the next, so a few users' scores differ between
the server and this process and the exact check below flags them (it warns when --second or
`current` is such a version). Without a second version a new one is built on the copy: 3
purchases of random items for half the users are appended to the copy's event log (at the
data's last timestamp, so the lists change), then `recengine nightly --config CONFIG --artifacts
COPY --force --incremental` runs in a subprocess (models reused: ~20 s on
data_samples/config.toml; --retrain runs the full nightly instead, ~4 min on 2 cores). The
nightly consumes those events (out of the log), so neither version's served list reads them.

Expected answers: each version's list for --users sampled users (known to both, with no event
in the log) in-process (`Recommender.load(version_folder).recommend(user, k=10)`); the number
of users whose lists differ between the two versions is printed, as the mixed-answer check
means something only for them. The same calls on the first version, timed one at a time on one
thread (`harness.latencies`, no event log), give the in-process p50/p99 the HTTP figures are
divided by.

Load. The server (`--workers N`, `--reload-interval 0.2`, on a free loopback port) is started
and waited for on /readyz, and both versions are loaded in it before the timed window (one
flip and back, untimed: the first load of a version is `bench_load.py`'s figure). Then two
open-loop streams: `GET /recommend?user_id=U&k=10` for the sampled users in turn, request i
sent at t0 + i/rate whatever the earlier ones are doing (each its own asyncio task; at most 48
on the wire, on 48 kept-alive connections, the rest wait their turn in the client), and `POST
/events` of one view/click/add_to_cart/purchase of a catalogue item for new session ids
(`bench-session-<n>`, five events each, never a sampled user) at --events-rate (16 connections
of their own); each POST is answered after the event log's fsync'd commit. Latency runs from
the scheduled send time to the whole response read, so time spent queued (in the client, the
socket or the server) counts: past the service's capacity it grows with the run, and the
achieved rate (answers / seconds from t0 to the last answer) is that capacity. The client's
lateness behind its schedule is printed apart; client and server share the machine's cores,
so the CPU each used over the load window is reported per request (the server's from /proc,
all its processes), and so is how the client's connections fell to the workers (`ss`).

Checks. An error is a transport error, a status other than 200 or no answer in time; a mixed
answer is a 200 whose items are not, item_id by item_id and score by score in order, the
expected list of the version the answer names (those that are the other version's list are
counted apart, and a few are printed). The script exits 1 when either count is not 0, or a
request of the freshness phase fails.

Freshness, after the load (flips stopped, `current` back on the first version): for 100 new
sessions, POST one view of the first item of the stranger list (the list for a user with no
history), then at once GET that session's list, and count the lists the item is gone from (an
unknown user's events are its history and its seen items); the time is from the POST's answer
to the GET's. Each request of this phase opens its own connection (`Connection: close`), so
with several workers the POST and the GET land on workers the kernel picks independently:
each worker must read the shared log on every request.

    python bench/bench_http.py --artifacts artifacts [--rate 200] [--seconds 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import OUT, Report, latencies

K = 10
GETS, POSTS = 48, 16  # connections of the load's client for each stream
TIMEOUT = 10.0  # seconds for any one request, from its scheduled send time
RELOAD = 0.2  # the server's --reload-interval
FRESH = 100  # sessions of the freshness phase
EVENTS = ("view", "click", "add_to_cart", "purchase")
PER_SESSION = 5  # events of one bench session
REBUILT = (
    "stores no request tables: each process that loads it rebuilds them, with co-visitation "
    "and transition weights that differ in their last bits from one load to the next, so a "
    "few users' scores differ between processes and the exact check would flag them"
)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile of `values` in ms (values in s); nan when empty."""
    import numpy as np

    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_root(src: Path, dst: Path, keep: set[str]) -> None:
    """`src` into `dst`: its `current` link, its event log, and the versions named in `keep`."""
    from engine.jobs.artifacts import CURRENT, VERSIONS
    from pipelines.event_log import FOLDER

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == src:
            return [n for n in names if n not in (CURRENT, VERSIONS, FOLDER)]
        if Path(folder) == src / VERSIONS:
            return [n for n in names if n not in keep]
        return []

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, Path]:
    """(copied root, its current version folder, the second version folder)."""
    from engine.jobs.artifacts import VERSIONS, current_version, switch_current
    from engine.request.store import has_tables

    src = args.artifacts.resolve()
    live = current_version(src)
    if live is None:
        raise SystemExit(f"{src}: no published version (run recengine nightly)")
    others = sorted(p for p in (src / VERSIONS).iterdir() if p.is_dir() and p != live)
    stored = [p for p in others if has_tables(p)]
    if not has_tables(live):
        print(f"warning: {live.name} {REBUILT}", flush=True)
    second_src: Path | None = None
    if args.second is not None:
        given = args.second if args.second.is_dir() else src / VERSIONS / str(args.second)
        if not (given / "manifest.json").is_file():
            raise SystemExit(f"--second {args.second}: not a version folder")
        second_src = given.resolve()
        if second_src.name == live.name:
            raise SystemExit(f"--second {args.second}: that is the current version")
        if not has_tables(second_src):
            print(f"warning: {second_src.name} {REBUILT}", flush=True)
    elif stored:
        second_src = stored[-1]
    if skipped := [p.name for p in others if p not in stored and args.second is None]:
        print(f"not used: {', '.join(skipped)}: {REBUILT}", flush=True)
    root = tmp / "artifacts"
    keep = {live.name} | ({second_src.name} if second_src is not None else set())
    t = time.perf_counter()
    copy_root(src, root, keep)
    if second_src is not None and not (root / VERSIONS / second_src.name).is_dir():
        shutil.copytree(second_src, root / VERSIONS / second_src.name)
    first = root / VERSIONS / live.name
    switch_current(root, first)  # relative, whatever the original link was
    print(f"copied {sorted(keep)} of {src} in {time.perf_counter() - t:.1f} s", flush=True)
    if second_src is not None:
        return root, first, root / VERSIONS / second_src.name
    added = seed_events(root, first, args.config)
    how = "retrained" if args.retrain else "incremental"
    print(
        f"building a second version ({how} nightly on {args.config}) after {added:,} events",
        flush=True,
    )
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "engine.cli", "nightly", "--config", str(args.config)]
    cmd += ["--artifacts", str(root), "--force", *([] if args.retrain else ["--incremental"])]
    log = tmp / "nightly.log"
    with log.open("wb") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"the nightly failed (exit {done.returncode}):\n{log.read_text()[-3000:]}")
    print(f"nightly: {time.perf_counter() - t:.0f} s", flush=True)
    built = sorted(p for p in (root / VERSIONS).iterdir() if p.is_dir() and p != first)
    if not first.is_dir() or not built:
        raise SystemExit("the nightly did not leave two versions (its retention pruned one?)")
    switch_current(root, first)
    return root, first, built[-1]


def seed_events(root: Path, version: Path, config: Path) -> int:
    """Append to the copy's log 3 purchases of random items for half of `version`'s users, at
    the data's last timestamp, so that a nightly over them gives other lists; the nightly
    consumes them (out of the log), so no served list reads them live. The events added."""
    import numpy as np
    import polars as pl

    from engine.config import EngineConfig
    from pipelines.config import load_config
    from pipelines.event_log import Event, EventLog
    from serving.state import VersionState

    cfg = load_config(config, EngineConfig)
    last = pl.scan_parquet(cfg.data.interactions).select(pl.col("ts").max()).collect().item()
    state = VersionState.load(version)
    users, items = state.users.ids(), state.items.ids()
    rng = np.random.default_rng(2)
    events = [
        Event(users[u], items[i], "purchase", last)
        for u in rng.choice(len(users), len(users) // 2, replace=False)
        for i in rng.integers(0, len(items), 3)
    ]
    log = EventLog.of_root(root)
    try:
        log.append(events)
    finally:
        log.close()
    return len(events)


def logged_users(root: Path) -> set[str]:
    """Users with an event in the copy's log (their served lists are not the version's)."""
    import sqlite3

    from pipelines.event_log import log_path

    path = log_path(root)
    if not path.is_file():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return {u for (u,) in con.execute("SELECT DISTINCT user_id FROM events")}


def expectations(
    args: argparse.Namespace, root: Path, folders: list[Path], report: Report
) -> tuple[
    list[str], dict[str, dict[str, list[tuple[str, float]]]], list[str], str, tuple[float, float]
]:
    """(sampled users, version -> user -> [(item_id, score)], catalogue items both versions
    know, the first version's stranger top item, in-process (p50, p99) ms), the in-process
    figures added to `report`."""
    import numpy as np

    from serving import Recommender

    recs = [Recommender.load(f) for f in folders]
    a, b = (r._state for r in recs)
    skip = logged_users(root)
    pool = sorted(u for u in a.users.ids() if u in b.users and u not in skip)
    rng = np.random.default_rng(0)
    users = [pool[i] for i in rng.choice(len(pool), min(args.users, len(pool)), replace=False)]
    expected = {
        r.version: {
            u: [(str(x["item_id"]), float(x["score"])) for x in r.recommend(u, k=K)]  # type: ignore[arg-type]
            for u in users
        }
        for r in recs
    }
    lists = list(expected.values())
    differ = sum(lists[0][u] != lists[1][u] for u in users)
    print(
        f"versions {recs[0].version} and {recs[1].version}: {len(users)} users sampled, "
        f"{differ} of them with different lists",
        flush=True,
    )
    if not differ:
        print("warning: the two versions give the same lists: the mixed check proves nothing")
    report.details["lists_differ"] = differ
    items = sorted(i for i in a.items.ids() if i in b.items)
    stranger = str(recs[0].recommend("bench-stranger", k=K)[0]["item_id"])
    p50, p99 = latencies(lambda u: recs[0].recommend(u, k=K), users, args.repeats)
    report.add("in-process Recommender.recommend(k=10) p50, one thread", p50, "ms")
    report.add("in-process Recommender.recommend(k=10) p99, one thread", p99, "ms")
    report.add("sampled users whose lists differ between the versions", differ, "users")
    return users, expected, items, stranger, (statistics.median(p50), statistics.median(p99))


class Server:
    """`recengine serve` on the copy, in its own process group (killed whole at the end)."""

    def __init__(self, root: Path, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--artifacts", str(root)]
        cmd += ["--port", str(self.port), "--workers", str(workers)]
        cmd += ["--reload-interval", str(RELOAD)]
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True
            )

    def ready(self, timeout: float = 180.0) -> str:
        """Wait for /readyz 200; the version it names."""
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return str(r.json()["version"])
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"no /readyz 200 from {self.url} within {timeout} s")

    def serving(self, version: str, timeout: float = 120.0) -> None:
        """Until 16 answers in a row on new connections name `version` (each worker has
        swapped it in, as far as the kernel's choice of worker shows)."""
        import httpx

        end, run = time.monotonic() + timeout, 0
        while run < 16:
            if time.monotonic() > end:
                raise SystemExit(f"the server did not swap in {version} within {timeout} s")
            r = httpx.get(f"{self.url}/readyz", headers={"Connection": "close"}, timeout=5.0)
            run = run + 1 if r.json().get("version") == version else 0
            if not run:
                time.sleep(RELOAD / 2)
        time.sleep(2 * RELOAD)

    def pids(self) -> list[int]:
        """The server's process and its workers."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return [self.proc.pid]
        return [self.proc.pid, *map(int, children.split())]

    def cpu(self) -> float:
        """CPU seconds used so far by the server's processes (Linux /proc)."""
        tick, total = os.sysconf("SC_CLK_TCK"), 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def connections(self) -> dict[int, int]:
        """Established connections to the port, by the process holding them (`ss`)."""
        import re

        try:
            ss = subprocess.run(
                ["ss", "-tnpH", "state", "established", f"( sport = :{self.port} )"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        return dict(Counter(int(p) for p in re.findall(r"pid=(\d+)", ss)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Flipper(threading.Thread):
    """Points `current` at the other version every `every` seconds until stopped."""

    def __init__(self, root: Path, folders: list[Path], every: float) -> None:
        super().__init__(name="flipper", daemon=True)
        self.root, self.folders, self.every = root, folders, every
        self.flips = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from engine.jobs.artifacts import switch_current

        while not self._halt.wait(self.every):
            self.flips += 1
            switch_current(self.root, self.folders[self.flips % 2])

    def stop(self) -> None:
        self._halt.set()
        self.join()


async def load(
    server: Server,
    args: argparse.Namespace,
    users: list[str],
    expected: dict[str, dict[str, list[tuple[str, float]]]],
    items: list[str],
    flipper: Flipper,
) -> dict[str, Any]:
    """The two open-loop streams, with the flipper running over them."""
    import aiohttp
    import numpy as np

    out: dict[str, Any] = {
        "recommend": [],
        "events": [],
        "errors": Counter(),
        "mixed": 0,
        "other": 0,  # mixed answers that are the other version's list
        "versions": Counter(),
        "lag": 0.0,
        "examples": [],
        "error_examples": [],
    }
    t0 = 0.0
    rng = np.random.default_rng(1)
    pool = GETS + POSTS
    # aiohttp, not httpx: on 2 cores the client shares the machine with the server, and
    # httpx's async client spent 3-10 ms of CPU a request under this load, aiohttp well under
    # 1 ms. Idle connections are closed here before uvicorn closes them (its keep-alive is
    # 5 s): a request sent on one the server is closing would fail.
    connector = aiohttp.TCPConnector(limit=pool, keepalive_timeout=2.0)
    # requests past a stream's connections wait here, not in httpx's pool (slow with many)
    gates = {"recommend": asyncio.Semaphore(GETS), "events": asyncio.Semaphore(POSTS)}
    loop = asyncio.get_running_loop()

    async def send(stream: str, at: float, call: Any) -> Any:
        """`call()`'s response once a connection of `stream` is free, None after an error
        (counted); `at + TIMEOUT` is the deadline, whatever it waited for."""
        try:
            async with asyncio.timeout_at(loop.time() + at + TIMEOUT - time.perf_counter()):
                async with gates[stream]:
                    status, body = await call()
        except TimeoutError:
            return failed(f"{stream}: no answer within {TIMEOUT:g} s", "", at)
        except aiohttp.ClientError as exc:
            return failed(f"{stream}: {type(exc).__name__}", repr(exc), at)
        if status != 200:
            return failed(f"{stream}: HTTP {status}", str(body)[:200], at)
        return body

    def failed(kind: str, detail: str, at: float) -> None:
        """Count an error; keep the first few, with when (from t0) it was sent and failed."""
        out["errors"][kind] += 1
        if len(out["error_examples"]) < 5:
            now = time.perf_counter() - t0
            out["error_examples"].append(
                f"{kind} {detail} (sent at +{at - t0:.2f} s, failed at +{now:.2f} s)"
            )

    async with aiohttp.ClientSession(server.url, connector=connector) as client:

        async def fetch(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
            """(status, the JSON body of a 200 or the text of anything else)."""
            async with client.request(method, path, **kwargs) as r:
                return r.status, await (r.json() if r.status == 200 else r.text())

        async def get(i: int, at: float) -> None:
            user = users[i % len(users)]
            params = {"user_id": user, "k": str(K)}
            body = await send("recommend", at, lambda: fetch("GET", "/recommend", params=params))
            if body is None:
                return
            out["recommend"].append(time.perf_counter() - at)
            out["versions"][body["version"]] += 1
            got = [(x["item_id"], x["score"]) for x in body["items"]]
            if expected.get(body["version"], {}).get(user) != got:
                out["mixed"] += 1
                out["other"] += any(
                    lists[user] == got for v, lists in expected.items() if v != body["version"]
                )
                if len(out["examples"]) < 5:
                    out["examples"].append({"user": user, "version": body["version"], "items": got})

        picks = rng.integers(0, len(items), int(args.events_rate * args.seconds) + 1)

        async def post(j: int, at: float) -> None:
            event = {
                "user_id": f"bench-session-{j // PER_SESSION}",
                "item_id": items[picks[j]],
                "event": EVENTS[j % len(EVENTS)],
            }
            r = await send("events", at, lambda: fetch("POST", "/events", json=event))
            if r is not None:
                out["events"].append(time.perf_counter() - at)

        async def stream(n: int, rate: float, fn: Any) -> list[asyncio.Task[None]]:
            tasks = []
            for i in range(n):
                at = t0 + i / rate
                if (wait := at - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                out["lag"] = max(out["lag"], time.perf_counter() - at)
                tasks.append(asyncio.create_task(fn(i, at)))
            return tasks

        # warm, not counted: the pool's connections open and the request path run once
        await asyncio.gather(*(fetch("GET", "/healthz") for _ in range(pool)))
        for user in users[:pool]:
            await fetch("GET", "/recommend", params={"user_id": user, "k": str(K)})
        out["connections"] = await asyncio.to_thread(server.connections)
        cpu0, client0 = server.cpu(), time.process_time()
        t0 = time.perf_counter() + 0.05
        flipper.start()
        sent = await asyncio.gather(
            stream(int(args.rate * args.seconds), args.rate, get),
            stream(int(args.events_rate * args.seconds), args.events_rate, post),
        )
        await asyncio.gather(*sent[0], *sent[1])
        out["seconds"] = time.perf_counter() - t0
        out["server_cpu"], out["client_cpu"] = server.cpu() - cpu0, time.process_time() - client0
        flipper.stop()
        out["flips"] = flipper.flips
        out["reloads"] = (await fetch("GET", "/version"))[1]["reloads"]
    return out


async def freshness(url: str, top: str) -> tuple[int, list[float], Counter[str]]:
    """(lists the viewed item is gone from, seconds from each POST's ack to its GET's answer,
    errors) over FRESH new sessions, each request on a new connection."""
    import httpx

    reflected, waits, errors = 0, [], Counter[str]()
    close = {"Connection": "close"}
    async with httpx.AsyncClient(base_url=url, headers=close, timeout=TIMEOUT) as client:
        for n in range(FRESH):
            session = f"bench-fresh-{n}"
            try:
                r = await client.post(
                    "/events", json={"user_id": session, "item_id": top, "event": "view"}
                )
                acked = time.perf_counter()
                if r.status_code != 200:
                    errors[f"events: HTTP {r.status_code}"] += 1
                    continue
                r = await client.get("/recommend", params={"user_id": session, "k": K})
                answered = time.perf_counter()
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            if r.status_code != 200:
                errors[f"recommend: HTTP {r.status_code}"] += 1
                continue
            waits.append(answered - acked)
            reflected += top not in [x["item_id"] for x in r.json()["items"]]
    return reflected, waits, errors


def describe(example: dict[str, Any], expected: dict[str, dict[str, list[Any]]]) -> str:
    """One mixed answer: whose list it equals, else where it first leaves the named one's."""
    user, version, got = example["user"], example["version"], example["items"]
    same = [v for v, lists in expected.items() if lists.get(user) == got]
    if same:
        return f"{user} answered as {version}: the list of {same[0]}"
    want = expected.get(version, {}).get(user)
    if want is None:
        return f"{user} answered as {version}, a version not served here"
    at = next(
        (n for n, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )
    return (
        f"{user} answered as {version}: neither list; from rank {at + 1} got "
        f"{got[at : at + 2]}, expected {want[at : at + 2]} ({len(got)} vs {len(want)} items)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument(
        "--config",
        type=Path,
        default=Path("data_samples/config.toml"),
        help="used only to build the second version: when --second is not given and no "
        "other version of the root stores its request tables",
    )
    ap.add_argument("--second", type=Path, help="the second version (folder, or its name)")
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="build the second version with a full nightly (models retrained: minutes), "
        "not an incremental one",
    )
    ap.add_argument("--rate", type=float, default=200.0, help="GET /recommend per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="load duration, at most 60")
    ap.add_argument("--flip-every", type=float, default=1.0, help="seconds between flips")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--users", type=int, default=200, help="users sampled and checked")
    ap.add_argument("--events-rate", type=float, default=20.0, help="POST /events per second")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the in-process timing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not 0 < args.seconds <= 60:
        ap.error("--seconds must be above 0 and at most 60")
    if args.rate <= 0 or args.events_rate <= 0 or args.flip_every <= 0 or args.workers < 1:
        ap.error("--rate, --events-rate and --flip-every must be positive, --workers >= 1")

    import logging
    import warnings

    from engine.jobs.artifacts import switch_current

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped too

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    report = Report("http", args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    server: Server | None = None
    server_log = ""
    try:
        root, first, second = prepare(args, tmp)
        users, expected, items, top, inproc = expectations(args, root, [first, second], report)
        t = time.perf_counter()
        server = Server(root, args.workers, tmp / "server.log")
        server.ready()
        for folder in (second, first):  # both versions loaded before the clock starts
            switch_current(root, folder)
            server.serving(folder.name)
        print(
            f"server on {server.url} ({args.workers} worker(s)) ready with both versions in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )
        gc.collect()
        gc.freeze()  # the collector's passes skip what set-up left: fewer client stalls
        flipper = Flipper(root, [first, second], args.flip_every)
        run = asyncio.run(load(server, args, users, expected, items, flipper))
        switch_current(root, first)
        server.serving(first.name)
        reflected, waits, fresh_errors = asyncio.run(freshness(server.url, top))
    finally:
        if server is not None:
            server.stop()
            server_log = server.log.read_text(errors="replace")[-3000:]
        shutil.rmtree(tmp, ignore_errors=True)

    rec, ev = run["recommend"], run["events"]  # seconds, from each scheduled send
    errors = sum(run["errors"].values())
    sent = int(args.rate * args.seconds)
    achieved = len(rec) / run["seconds"]
    http_p50 = pct(rec, 50)
    inproc_p50, inproc_p99 = inproc
    report.add(
        f"HTTP GET /recommend p50 at {args.rate:g}/s, {args.workers} worker(s)",
        http_p50,
        "ms",
        ratio=("in-process p50", http_p50 / inproc_p50),
    )
    report.add("HTTP GET /recommend p95", pct(rec, 95), "ms")
    report.add(
        "HTTP GET /recommend p99",
        pct(rec, 99),
        "ms",
        ratio=("in-process p99", pct(rec, 99) / inproc_p99),
    )
    report.add("HTTP GET /recommend max", pct(rec, 100), "ms")
    report.add(f"HTTP POST /events p50 (fsync'd) at {args.events_rate:g}/s", pct(ev, 50), "ms")
    report.add("HTTP POST /events p99 (fsync'd)", pct(ev, 99), "ms")
    report.add(
        "achieved rate (answers with status 200 / load seconds)",
        achieved,
        "req/s",
        ratio=("of the asked rate", achieved / args.rate),
    )
    report.add("client lateness behind schedule, max", run["lag"] * 1e3, "ms")
    requests = len(rec) + len(ev)
    report.add(
        "server CPU per request answered (all its processes)",
        run["server_cpu"] / max(requests, 1) * 1e3,
        "ms",
        ratio=("in-process p50", run["server_cpu"] / max(requests, 1) * 1e3 / inproc_p50),
    )
    report.add(
        "client CPU per request (this process)", run["client_cpu"] / max(requests, 1) * 1e3, "ms"
    )
    report.add("errors (transport or not 200)", errors, "requests", goal="0", met=errors == 0)
    report.add(
        "mixed answers (not exactly the named version's list)",
        run["mixed"],
        "answers",
        goal="0",
        met=run["mixed"] == 0,
    )
    report.add("mixed answers that are the other version's list", run["other"], "answers")
    report.add(f"flips of current (every {args.flip_every:g} s)", run["flips"], "flips")
    report.add("reloads of the worker that answered GET /version", run["reloads"], "reloads")
    for version in (first.name, second.name):
        report.add(f"answers from {version}", run["versions"][version], "answers")
    report.add(
        f"freshness: lists without the item just viewed, of {FRESH}",
        reflected,
        "sessions",
        goal=f"{FRESH}",
        met=reflected == FRESH,
    )
    report.add("freshness: POST ack to next GET answer p50", pct(waits, 50), "ms")
    report.add("freshness: POST ack to next GET answer p99", pct(waits, 99), "ms")
    report.details.update(
        sent=sent,
        answered=len(rec),
        events_sent=int(args.events_rate * args.seconds),
        events_acked=len(ev),
        errors=dict(run["errors"]),
        versions_seen=dict(run["versions"]),
        connections_by_process=run["connections"],
        freshness_errors=dict(fresh_errors),
    )
    print(
        f"errors: {errors} {dict(run['errors']) or ''}; mixed answers: {run['mixed']}; "
        f"versions seen: {dict(run['versions'])}; flips: {run['flips']}; "
        f"connections by server process at the start: {run['connections']}; "
        f"freshness: {reflected} of {FRESH} on the next request"
        + (f" (errors {dict(fresh_errors)})" if fresh_errors else ""),
        flush=True,
    )
    for example in run["examples"]:
        print(f"  mixed: {describe(example, expected)}")
    for line in run["error_examples"]:
        print(f"  error: {line}")
    if run["errors"] or fresh_errors:
        print(f"the server's last log lines:\n{server_log}")
    report.details["mixed_examples"] = run["examples"]
    report.finish(args.out)
    if errors or run["mixed"] or fresh_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
