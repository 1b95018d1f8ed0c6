"""Wrong device user codes per client address: after :data:`MAX_WRONG` in :data:`WINDOW_S`,
every code lookup is refused.

A lookup in progress holds a slot (:meth:`WrongCodes.acquire`) until its answer is known
(:meth:`WrongCodes.finish`), so parallel wrong guesses cannot all pass the check before the
first is counted. A lookup that finds the budget held only by lookups in progress waits for
one of them to end instead of being refused: only codes decided wrong ever refuse, so
parallel lookups of a good code all succeed.

:class:`MemoryWrongCodes` counts in this process; :class:`cluster.state.wrong_codes.
RedisWrongCodes` keeps the same rules for every process of a cluster.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from state.counting import MAX_TRACKED_KEYS, InFlight

MAX_WRONG = 5
WINDOW_S = 600.0
#: How long a lookup waits for lookups in progress (then: retry in 1 s).
ACQUIRE_WAIT_S = 10.0


class WrongCodes(Protocol):
    """The wrong-code limit as the verification routes use it."""

    async def acquire(self, ip: str, wait: float = ACQUIRE_WAIT_S) -> int | None:
        """A slot for one lookup (``None``), or the seconds to wait. A budget held only by
        lookups in progress is waited for (up to ``wait`` seconds, then 1)."""
        ...

    async def finish(self, ip: str, *, wrong: bool) -> None:
        """Give the slot back once the answer is known, counting it when wrong."""
        ...


class MemoryWrongCodes:
    """:class:`WrongCodes` in this process's memory."""

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
        self._pending = InFlight()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

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
        """Seconds until ``ip`` may look codes up again; ``None`` when it may now. Lookups in
        progress count as wrong until they are known (then 1 s: they end shortly)."""
        now = self._clock()
        hits = self._recent(ip, now)
        count = len(hits) if hits is not None else 0
        if count + self._pending[ip] < self.limit:
            return None
        if hits is None or count < self.limit:
            return 1
        return max(1, math.ceil(hits[-self.limit] + self.window - now))

    def reserve(self, ip: str) -> int | None:
        """Take a slot for one lookup (``None``), or say how long to wait. A taken slot must
        be given back with :meth:`release` — after :meth:`record_wrong` when it was wrong."""
        retry = self.retry_after(ip)
        if retry is None:
            self._pending.add(ip)
        return retry

    def wrong_count(self, ip: str) -> int:
        """Codes decided wrong for ``ip`` within the window."""
        hits = self._recent(ip, self._clock())
        return len(hits) if hits is not None else 0

    async def acquire(self, ip: str, wait: float = ACQUIRE_WAIT_S) -> int | None:
        """Like :meth:`reserve`, but a budget held only by lookups in progress is waited
        for (up to ``wait`` seconds, then 1 s to retry) rather than refused: those lookups
        may well be good codes. Only decided wrong codes answer at once with their wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            retry = self.reserve(ip)
            if retry is None:
                return None
            if self.wrong_count(ip) >= self.limit:
                return retry
            remaining = deadline - loop.time()
            if remaining <= 0:
                return 1
            waiter: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(ip, [])
            waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return 1
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters and self._waiters.get(ip) is waiters:
                    del self._waiters[ip]

    def release(self, ip: str) -> None:
        self._pending.remove(ip)
        # Everyone waiting on this IP checks again (a freed slot, or a new wrong code).
        for waiter in self._waiters.pop(ip, []):
            if not waiter.done():
                waiter.set_result(None)

    async def finish(self, ip: str, *, wrong: bool) -> None:
        if wrong:
            self.record_wrong(ip)
        self.release(ip)

    def record_wrong(self, ip: str) -> None:
        now = self._clock()
        hits = self._recent(ip, now)
        if hits is None:
            if len(self._wrong) >= MAX_TRACKED_KEYS:
                self._wrong.pop(next(iter(self._wrong)))
            hits = self._wrong[ip] = deque(maxlen=self.limit * 4)
        hits.append(now)
