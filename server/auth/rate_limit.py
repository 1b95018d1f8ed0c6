"""Wrong user codes per client IP: after 5 in 10 minutes, every code lookup gets 429.

Kept in process memory: a user code has 20^8 values and lives 30 minutes, so the limit
only has to make guessing hopeless, and per-process counting does that (several processes
multiply the budget by their number, which stays negligible).

Counting is by :func:`rate_key`: an IPv4 address, or an IPv6 address's ``/64`` (one
subscriber typically holds a whole /64, so per-address counting would be no limit at all).
A lookup in progress holds a slot (:meth:`WrongCodeLimiter.reserve`) until its answer is
known, so parallel wrong guesses cannot all pass the check before the first is counted.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable

from server.auth.client_ip import parse_ip

MAX_WRONG = 5
WINDOW_S = 600.0
_MAX_TRACKED_IPS = 100_000
_IPV6_PREFIX = 64


def rate_key(address: str) -> str:
    """What wrong codes are counted against: the IPv4 address (IPv4-mapped IPv6 unwrapped),
    the ``/64`` network of an IPv6 address, or the string itself when it is no address."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False))
    return str(ip)


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
        self._pending: dict[str, int] = {}

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
        if count + self._pending.get(ip, 0) < self.limit:
            return None
        if hits is None or count < self.limit:
            return 1
        return max(1, math.ceil(hits[-self.limit] + self.window - now))

    def reserve(self, ip: str) -> int | None:
        """Take a slot for one lookup (``None``), or say how long to wait. A taken slot must
        be given back with :meth:`release` — after :meth:`record_wrong` when it was wrong."""
        retry = self.retry_after(ip)
        if retry is None:
            self._pending[ip] = self._pending.get(ip, 0) + 1
        return retry

    def release(self, ip: str) -> None:
        left = self._pending.get(ip, 0) - 1
        if left > 0:
            self._pending[ip] = left
        else:
            self._pending.pop(ip, None)

    def record_wrong(self, ip: str) -> None:
        now = self._clock()
        hits = self._recent(ip, now)
        if hits is None:
            if len(self._wrong) >= _MAX_TRACKED_IPS:
                self._wrong.pop(next(iter(self._wrong)))
            hits = self._wrong[ip] = deque(maxlen=self.limit * 4)
        hits.append(now)
