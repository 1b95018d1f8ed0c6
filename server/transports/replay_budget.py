"""How many bytes of replay one reader may be sent per minute (``CERO_REPLAY_BYTES_PER_MINUTE``).

A ``subscribe`` (or an SSE resume) from the start of a log costs a few dozen bytes and makes
the server send every event it holds: two generations, megabytes for a long answer. Sent in
a loop it turned 44 KiB of frames into 1 GB of output in 20 s on one socket (issue 20). So
replay is paid for from a token bucket of bytes: it holds ``CERO_REPLAY_BYTES_PER_MINUTE``
and refills at that rate per minute; the bytes counted are the frames actually rendered for
the replay. One WebSocket has its own bucket; SSE event streams share one per user (an SSE
resume is a new request, so a per-stream bucket would be no bound), in this process's memory
even in cluster mode.

A replay that does not fit is not sent at all (all or nothing, as the contract asks): the
subscription starts with ``reset`` instead, exactly as for a cursor that cannot be replayed —
the client refetches over REST and goes on live. That is why ``reset`` and not
``fault rate_limited``: every client already handles ``reset`` and keeps its live
subscription; a refused ``subscribe`` would leave a client that does not retry (the web page)
following nothing. The refusal is counted in ``cero_limit_refusals_total{limit="replay_bytes"}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from actors.api import Event, Subscription
from server.core.app_keys import SETTINGS
from server.ops.metrics import METRICS

#: Per-user buckets kept before idle (full) ones are forgotten.
_MAX_TRACKED_USERS = 10_000


class ReplayBudget:
    """A token bucket of bytes: holds ``per_minute``, refills at ``per_minute`` a minute."""

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "rate")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens = tokens
        return tokens

    def spend(self, size: int) -> bool:
        """Take ``size`` bytes if the bucket holds them; ``False`` (nothing taken) if not."""
        if self._refill() < size:
            return False
        self._tokens -= size
        return True

    def full(self) -> bool:
        return self._refill() >= self.capacity


class UserReplayBudgets:
    """One :class:`ReplayBudget` per user (SSE event streams), in process memory."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._budgets: dict[str, ReplayBudget] = {}

    def of(self, user_id: str) -> ReplayBudget:
        budget = self._budgets.get(user_id)
        if budget is None:
            if len(self._budgets) >= _MAX_TRACKED_USERS:
                # A full bucket is the same as a new one: forgetting it changes nothing.
                for key in [k for k, b in self._budgets.items() if b.full()]:
                    del self._budgets[key]
            budget = self._budgets[user_id] = ReplayBudget(self.per_minute, self._clock)
        return budget


SSE_REPLAY: web.AppKey[UserReplayBudgets] = web.AppKey("sse_replay_budgets")


def replay_within(
    app: web.Application,
    sub: Subscription,
    render: Callable[[Event], bytes | None],
    budget: ReplayBudget,
) -> bytes:
    """Take what ``sub`` holds right after subscribing (its replay) and render it, if the
    budget pays for it; else ``b""`` and ``sub`` now holds a ``reset`` instead (counted).

    Call it with no ``await`` between it and the subscribe's answer (``subscribed``), which
    must report ``sub.recovered`` as it is afterwards."""
    events = sub.take()
    if not events:
        return b""
    frames = b"".join(frame for frame in map(render, events) if frame is not None)
    if len(events) == 1 and events[0].type == "reset":
        return frames  # a cursor that could not be replayed: nothing to pay for
    if budget.spend(len(frames)):
        return frames
    app[METRICS].limit_refusals_by("replay_bytes")
    sub.refuse_replay()
    return b""


def setup(app: web.Application) -> None:
    app[SSE_REPLAY] = UserReplayBudgets(app[SETTINGS].replay_bytes_per_minute)
