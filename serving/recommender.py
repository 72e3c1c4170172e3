"""`Recommender`: load a published version and answer top-k lookups in-process.

The live path of a known user reads the version's arrays (`engine.request`): candidates from
every source (two-tower ANN in FAISS, co-visitation, content, trending, repeat, EASE, item-kNN,
transitions) -> the re-ranker's features, column for column what the batch path's
`feature_frame` computes (a test holds them equal) -> LightGBM -> business rules. A user the
version does not know, or a caller who passes a history instead of an id, takes the anonymous
path: a user vector from the history and attributes (the user tower without TorchRec) -> FAISS
-> rules, by two-tower score (there is no user row for the re-ranker's user features).

Example:
    >>> rec = Recommender.load("artifacts")            # follows `current`
    >>> rec.recommend("u42", k=10)                     # [{"item_id", "score", "rank", ...}]
    >>> rec.recommend(history=["P01", "P07"], user_features={"country": "de"})
    >>> rec.recommend_batch(["u1", "u2"], k=5)         # Polars DataFrame
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from engine.jobs.artifacts import MANIFEST
from pipelines.config import EVENTS
from pipelines.event_log import Event, EventLog
from serving.live import LiveHistory
from serving.state import Kind, VersionState, resolve

KINDS = ("product", "ad", "mixed")


class Answers:
    """The request methods, over one version state: `Recommender` answers each call from the
    version live at the time, `Pinned` every call from the one it holds."""

    _state: VersionState  # read once per call: a reload swaps it between calls, never within
    _live: LiveHistory | None

    def _pinned(self) -> tuple[VersionState, LiveHistory | None]:
        return self._state, self._live

    @property
    def version(self) -> str:
        return self._pinned()[0].folder.name

    @property
    def events_through(self) -> int:
        """The event log's events up to this id are in the version's data."""
        return self._pinned()[0].events_through

    def recommend(
        self,
        user_id: str | int | None = None,
        *,
        k: int = 10,
        kind: Kind = "product",
        exclude: Iterable[str | int] = (),
        filters: Mapping[str, object] | None = None,
        history: Sequence[str | int] | None = None,
        user_features: dict[str, str] | None = None,
        explain: bool = False,
    ) -> list[dict[str, object]]:
        """The top `k` for a user id, or for a history (anonymous or new users).

        `filters` keep products by `category` (name or path prefix), `brand`, `min_price`,
        `max_price` (see `serving.filters`). Returns dicts with item_id, rank, score (and pctr,
        bid, ecpm for ads; kind in a mixed list; why when `explain`). Fewer than `k` when fewer
        items qualify, never padding. With an event log (`Recommender.load(..., events=True)`)
        the user's events since the version join their history first.
        """
        _check(k=k, kind=kind)
        if user_id is None and history is None:
            raise ValueError("recommend needs a user_id or a history")
        state, live = self._pinned()
        uid = None if user_id is None else str(user_id)
        recent = None
        if live is not None and uid is not None:
            live.catch_up()
            recent = live.items(uid, after=state.events_through)
        return state.recommend(
            uid,
            k=k,
            kind=kind,
            exclude=[str(e) for e in exclude],
            history=None if history is None else [str(h) for h in history],
            user_features=user_features or {},
            explain=explain,
            filters=dict(filters) if filters else None,
            live=recent,
        )

    def recommend_batch(
        self,
        user_ids: Sequence[str | int],
        *,
        k: int = 10,
        kind: Literal["product", "ad"] = "product",
    ) -> pl.DataFrame:
        """user_id, rank, item_id, score (+ pctr, bid, ecpm for ads) for every user: the
        version's lists, as the nightly published them (events since do not enter)."""
        _check(k=k, kind=kind)
        if kind == "mixed":
            raise ValueError("recommend_batch takes kind 'product' or 'ad'")
        state, _ = self._pinned()
        return state.recommend_batch([str(u) for u in user_ids], k=k, kind=kind)

    def similar_items(self, item_id: str | int, k: int = 10) -> list[dict[str, object]]:
        """Items nearest to `item_id` by two-tower item vector (empty for an unknown id)."""
        _check(k=k, kind="product")
        state, _ = self._pinned()
        return state.similar_items(str(item_id), k)


class Pinned(Answers):
    """One version's answers: several calls (and the version they report) that a reload in
    between cannot split across two versions."""

    def __init__(self, state: VersionState, live: LiveHistory | None) -> None:
        self._state, self._live = state, live


class Recommender(Answers):
    """Thread-safe: every call reads one immutable version state; `reload()` swaps it.

    The states of the last `keep` versions stay loaded, so pointing `current` back at the
    previous version (a rollback) swaps it in at once. Memory holds `keep` versions between
    reloads and peaks at max(keep, 2) during one (the oldest kept state is let go before a new
    one loads; any reload holds the old state and the new one while calls in flight finish),
    so the default keep=2 costs no more at the peak than keep=1."""

    def __init__(
        self,
        root: Path,
        state: VersionState,
        *,
        keep: int = 2,
        live: LiveHistory | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep!r}")
        self._root = root
        self._state = state
        self._keep = keep
        self._loaded: OrderedDict[Path, VersionState] = OrderedDict({state.folder: state})
        self._lock = threading.Lock()
        self._live = live
        if live is not None:
            live.rebase(state.events_through, state.positive_events)
            live.catch_up()  # the backlog since the version is read here, not by a request

    @classmethod
    def load(cls, path: str | Path, *, keep: int = 2, events: bool = False) -> Recommender:
        """An artifacts root (its `current` version) or one version's folder; every file is
        checked against the manifest first. `events` opens the root's event log: `record`
        appends to it, and each user's events since the version shape their next list."""
        root = Path(path)
        _freeze_libraries()
        state = VersionState.load(resolve(root))
        live = None
        if events:
            if (root / MANIFEST).is_file():
                raise ValueError(f"{root} is one version's folder: events need an artifacts root")
            live = LiveHistory(EventLog.of_root(root), keep=state.cfg.features.history_length)
        return cls(root, state, keep=keep, live=live)

    def pinned(self) -> Pinned:
        """The version live now, held for several calls."""
        return Pinned(self._state, self._live)

    def reload(self) -> bool:
        """Swap in the version `current` now points at, if it changed (loaded and verified
        unless it is one of the `keep` kept); calls in flight finish on the state they
        started with. True when the version changed."""
        with self._lock:
            folder = resolve(self._root)
            if folder == self._state.folder:
                return False
            state = self._loaded.pop(folder, None)
            if state is None:
                while len(self._loaded) >= self._keep and len(self._loaded) > 1:
                    self._loaded.popitem(last=False)  # never the live state
                state = VersionState.load(folder)
            self._loaded[folder] = state
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
            self._state = state  # one reference swap: atomic for readers
            if self._live is not None:
                self._live.rebase(state.events_through, state.positive_events)
            return True

    def record(self, events: Sequence[Event]) -> list[int]:
        """Append `events` to the event log, durable (fsynced) when this returns; their ids.
        Every item must be one the live version knows, every event a contract name."""
        if self._live is None:
            raise ValueError("no event log: load with Recommender.load(root, events=True)")
        state = self._state
        for n, e in enumerate(events):
            if e.event not in EVENTS:
                raise ValueError(
                    f"events[{n}].event: unknown event {e.event!r} (allowed: {', '.join(EVENTS)})"
                )
            if e.item_id not in state.items:
                raise ValueError(f"events[{n}].item_id: unknown item {e.item_id!r}")
            if not e.user_id:
                raise ValueError(f"events[{n}].user_id: empty")
        ids = self._live.log.append(events)
        self._live.catch_up()
        return ids

    @property
    def live_users(self) -> int:
        """Users with events since the loaded version (0 without an event log)."""
        return 0 if self._live is None else self._live.users


_frozen = threading.Event()


def _freeze_libraries() -> None:
    """Once per process, before the first version loads: every object alive (~300,000, the
    libraries' own) leaves the cyclic garbage collector's sight. Its full collections then
    scan what a version and the requests make (~1,500 objects: 0.2 ms) instead of everything
    (114 ms at a million items, a stall for whichever request it fell in). Versions loaded
    later stay collectable, so one let go after a reload is freed whole."""
    if not _frozen.is_set():
        _frozen.set()
        gc.collect()
        gc.freeze()


def _check(*, k: object, kind: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
