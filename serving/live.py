"""What users did since the loaded version was built: the positive events of the shared event
log (`pipelines.event_log`) above the version's `events_through`, by user id, in memory.

Every request first catches up with the log (one indexed query for the ids above the last one
read: tens of microseconds when nothing is new), so a worker's view is as fresh as the log at
the moment the request starts: an event acknowledged by any worker of the service, or by any
process appending to the log, shapes the next request wherever it lands.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Collection

from pipelines.event_log import EventLog


class LiveHistory:
    """Per user id, the (event id, item id) of their positive events, oldest first, the last
    `keep` of each user (a history is never read further back)."""

    def __init__(self, log: EventLog, *, keep: int = 50) -> None:
        self.log = log
        self.keep = keep
        self._last = 0  # the highest event id read from the log
        self._floor = 0  # events at or below are in the loaded version
        self._positive: Collection[str] = ()
        self._by_user: defaultdict[str, deque[tuple[int, str]]] = defaultdict(
            lambda: deque(maxlen=self.keep)
        )
        self._lock = threading.Lock()

    def rebase(self, through: int, positive: Collection[str]) -> None:
        """A version built with the events up to `through` is loaded: those events are in it
        now (dropped here); `positive` names the events it counts in a history."""
        with self._lock:
            if through < self._floor or set(positive) != set(self._positive):
                self._by_user.clear()  # an older version (a rollback): read again from it
                self._last = through
            self._floor, self._positive = through, frozenset(positive)
            self._last = max(self._last, through)
            for user in list(self._by_user):
                kept = deque((i, it) for i, it in self._by_user[user] if i > through)
                if kept:
                    self._by_user[user] = deque(kept, maxlen=self.keep)
                else:
                    del self._by_user[user]

    def catch_up(self) -> int:
        """Read the events appended since the last call; returns the highest id read."""
        with self._lock:
            for event_id, user, item, event in self.log.since(self._last):
                if event in self._positive and event_id > self._floor:
                    self._by_user[user].append((event_id, item))
                self._last = event_id
            return self._last

    def items(self, user_id: str, *, after: int) -> list[str]:
        """The items of `user_id`'s positive events with ids above `after`, oldest first."""
        with self._lock:
            rows = self._by_user.get(user_id)
            return [item for i, item in rows if i > after] if rows else []

    @property
    def users(self) -> int:
        with self._lock:
            return len(self._by_user)
