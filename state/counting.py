"""The in-memory counters the limits are built from: :class:`InFlight` (what is in
progress per key) and :class:`SlidingWindow` (events per key in a moving window)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: Keys a window remembers at most (the idle ones are forgotten first).
MAX_TRACKED_KEYS = 100_000


class InFlight:
    """How many things are in progress per key. A key with none left is forgotten, so
    memory follows what is in progress, not every key ever seen."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)

    def add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self._counts.get(key, 0) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds (in process memory)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> int | None:
        """Count one event for ``key``: ``None`` when allowed, else the seconds to wait
        (a refused event is not counted)."""
        now = self._clock()
        hits = self._hits.get(key)
        if hits is not None:
            while hits and hits[0] <= now - self.window:
                hits.popleft()
        if hits is not None and len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now))
        if hits is None:
            if len(self._hits) >= MAX_TRACKED_KEYS:
                self._forget_idle(now)
            hits = self._hits[key] = deque()
        hits.append(now)
        return None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        while len(self._hits) >= MAX_TRACKED_KEYS:
            self._hits.pop(next(iter(self._hits)))
