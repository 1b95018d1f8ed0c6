"""Wrong user codes per client IP: after 5 in 10 minutes, every code lookup gets 429.

Kept in process memory: a user code has 20^8 values and lives 30 minutes, so the limit
only has to make guessing hopeless, and per-process counting does that (several processes
multiply the budget by their number, which stays negligible).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

MAX_WRONG = 5
WINDOW_S = 600.0
_MAX_TRACKED_IPS = 100_000


class WrongCodeLimiter:
    def __init__(
        self,
        limit: int = MAX_WRONG,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._wrong: dict[str, deque[float]] = {}

    def _recent(self, ip: str, now: float) -> deque[float] | None:
        hits = self._wrong.get(ip)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._wrong[ip]
            return None
        return hits

    def retry_after(self, ip: str) -> int | None:
        """Seconds until ``ip`` may look codes up again; ``None`` when it may now."""
        now = self._clock()
        hits = self._recent(ip, now)
        if hits is None or len(hits) < self.limit:
            return None
        return max(1, math.ceil(hits[-self.limit] + self.window - now))

    def record_wrong(self, ip: str) -> None:
        now = self._clock()
        hits = self._recent(ip, now)
        if hits is None:
            if len(self._wrong) >= _MAX_TRACKED_IPS:
                self._wrong.pop(next(iter(self._wrong)))
            hits = self._wrong[ip] = deque(maxlen=self.limit * 4)
        hits.append(now)
