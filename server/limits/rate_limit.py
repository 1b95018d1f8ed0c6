"""Wrong user codes per client IP: after 5 in 10 minutes, every code lookup gets 429.

Kept in process memory here; in cluster mode :mod:`server.shared_state` keeps the same
rules in Redis (:class:`WrongCodes` and :class:`Window` are what both provide), so the
budget holds across every process.

Counting is by :func:`rate_key`: an IPv4 address, or an IPv6 address's ``/64`` (one
subscriber typically holds a whole /64, so per-address counting would be no limit at all).
A lookup in progress holds a slot (:meth:`WrongCodeLimiter.reserve`) until its answer is
known, so parallel wrong guesses cannot all pass the check before the first is counted. A
lookup that finds the budget held only by lookups in progress waits for one of them to end
(:meth:`WrongCodeLimiter.acquire`) instead of being refused: only codes decided wrong ever
earn a ``429``, so parallel lookups of a good code all succeed.

:class:`SlidingWindow` counts requests per key (device codes issued per IP);
:class:`InFlight` counts what is in progress per key (lookups here, generations per user,
connections per address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from server.core.client_ip import parse_ip

MAX_WRONG = 5
WINDOW_S = 600.0
_MAX_TRACKED_IPS = 100_000
_IPV6_PREFIX = 64
ACQUIRE_WAIT_S = 10.0


def rate_key(address: str) -> str:
    """What wrong codes are counted against: the IPv4 address (IPv4-mapped IPv6 unwrapped),
    the ``/64`` network of an IPv6 address, or the string itself when it is no address."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False))
    return str(ip)


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


class WrongCodes(Protocol):
    """The wrong-code limit as the verification routes use it."""

    async def acquire(self, ip: str, wait: float = ACQUIRE_WAIT_S) -> int | None:
        """A slot for one lookup (``None``), or the seconds to wait."""

    async def finish(self, ip: str, *, wrong: bool) -> None:
        """Give the slot back once the answer is known, counting it when wrong."""


class Window(Protocol):
    async def hit(self, key: str) -> int | None:
        """Count one event: ``None`` when allowed, else the seconds to wait."""


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
            if len(self._wrong) >= _MAX_TRACKED_IPS:
                self._wrong.pop(next(iter(self._wrong)))
            hits = self._wrong[ip] = deque(maxlen=self.limit * 4)
        hits.append(now)


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
            if len(self._hits) >= _MAX_TRACKED_IPS:
                self._forget_idle(now)
            hits = self._hits[key] = deque()
        hits.append(now)
        return None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        while len(self._hits) >= _MAX_TRACKED_IPS:
            self._hits.pop(next(iter(self._hits)))


class LocalWindow:
    """A :class:`SlidingWindow` behind the :class:`Window` interface (single-process mode)."""

    def __init__(self, limit: int, window: float) -> None:
        self.window = SlidingWindow(limit, window)

    async def hit(self, key: str) -> int | None:
        return self.window.hit(key)
