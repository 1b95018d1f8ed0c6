"""WebSocket frames per second per connection: a token bucket (sans-I/O, like the hub).

Every data frame a client sends (text or binary, ``ping`` JSON frames included; RFC 6455
ping/pong control frames never reach the handler) takes a token. The bucket holds
``CERO_WS_FRAME_BURST`` tokens and refills at ``CERO_WS_FRAMES_PER_SECOND``. A frame that
finds it empty is not processed, and the verdict says what to do about it:

- ``FAULT``: answer ``fault`` ``rate_limited`` with ``retryAfter``, at most once per
  :data:`FAULT_INTERVAL_S` — an abuser must not make us write one frame per frame;
- ``DROP``: drop it silently;
- ``CLOSE``: the connection kept going over the rate — more than :data:`FLOOD_SECONDS`
  seconds' worth of frames dropped within :data:`FLOOD_WINDOW_S` — close with 1008, as
  for too many bad frames (docs/api.md).

Per connection, so in this process's memory even in cluster mode: a socket lives on one
process. Why not ``limits``: its memory moving window costs 2.6–25 µs a hit here (more as
the rate it admits grows: it keeps one entry per admitted hit), on the hottest inbound
path; this bucket costs 0.3–0.8 µs and two floats (``python -m bench.frame_rate_micro``;
numbers in the README's abuse-limits paragraph).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

from state.counting import SlidingWindow

#: At most one ``rate_limited`` fault per this many seconds per connection.
FAULT_INTERVAL_S = 1.0
#: Dropping more than this many seconds' worth of frames (at the allowed rate)...
FLOOD_SECONDS = 5
#: ...within this window closes the connection with 1008.
FLOOD_WINDOW_S = 10.0


class Verdict(enum.Enum):
    ADMIT = "admit"
    FAULT = "fault"
    DROP = "drop"
    CLOSE = "close"


class FrameRate:
    """The bucket of one connection."""

    __slots__ = ("_clock", "_dropped", "_next_fault", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._next_fault = -math.inf
        self._dropped: SlidingWindow | None = None  # made on the first dropped frame

    def admit(self) -> Verdict:
        now = self._clock()
        tokens = self._tokens + (now - self._stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return Verdict.ADMIT
        self._tokens = tokens
        if self._dropped is None:
            limit = max(1, math.ceil(FLOOD_SECONDS * self.rate))
            self._dropped = SlidingWindow(limit, FLOOD_WINDOW_S, self._clock)
        if self._dropped.hit("") is not None:
            return Verdict.CLOSE
        if now >= self._next_fault:
            self._next_fault = now + FAULT_INTERVAL_S
            return Verdict.FAULT
        return Verdict.DROP

    def retry_after(self) -> int:
        """Whole seconds until the next frame would be admitted (at least 1)."""
        return max(1, math.ceil((1.0 - self._tokens) / self.rate))
