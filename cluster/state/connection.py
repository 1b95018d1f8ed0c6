"""The process's Redis client and whether Redis answers.

One ``redis.asyncio`` client (its own connection pool) per process, opened and closed with
the app (``server.cluster_mode.redis_client``). Faults: a :class:`RedisHealth` per process
knows whether Redis answers. A monitor task pings it every :data:`CHECK_INTERVAL_S`, and
every failed command reported through :meth:`RedisHealth.failed` marks it down at once; the
next good ping marks it up again, so the process recovers by itself when Redis returns (the
client reconnects on its next command).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.faults import REDIS_FAULTS

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 2.0
#: A command that takes longer than this fails (Redis answers in well under a millisecond
#: here; a stuck one must not hold a request for long).
COMMAND_TIMEOUT_S = 2.0
#: How often the monitor pings Redis (down → up is noticed within this).
CHECK_INTERVAL_S = 1.0
#: How long a command waits for a free pooled connection before it fails.
POOL_WAIT_S = 5.0
#: The health monitor's own client: its pings never wait behind a busy pool, so "down"
#: means Redis did not answer, not that this process was busy.
HEALTH_CONNECTIONS = 2
#: A request that finds Redis marked down pings it once before refusing, waiting at most
#: this long: a Redis that came back is used at once instead of after the monitor's next
#: ping (up to :data:`CHECK_INTERVAL_S`).
RECHECK_WAIT_S = 0.25
#: At most one such ping per this many seconds (one in flight, shared by every request):
#: a Redis that stays down costs the requests nothing more than the flag.
RECHECK_EVERY_S = 0.1


def connect(url: str, max_connections: int = HEALTH_CONNECTIONS) -> redis.Redis:
    """A client that answers quickly when Redis is gone (commands raise, nothing hangs)
    and waits when busy: its pool of ``max_connections`` is a *blocking* one, so a command
    finding every connection in use waits up to :data:`POOL_WAIT_S` for one instead of
    failing (redis-py's default pool raises ``MaxConnectionsError`` at once, which a busy
    process took for "Redis is down": issue 21).

    A command that fails with a connection error is sent once more on a new connection:
    after Redis restarts, every pooled connection is dead, and without this each one
    failed its first command (and marked Redis down) although Redis answered again. A
    Redis that is really gone fails the second try as fast as the first (refused)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=10,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return redis.Redis.from_pool(pool)


def pool_exhausted(exc: BaseException) -> bool:
    """The pool had no free connection within :data:`POOL_WAIT_S`: the process is busy,
    Redis itself may be fine."""
    return isinstance(exc, RedisConnectionError) and str(exc) == "No connection available."


class RedisHealth:
    """Whether this process's Redis answers: ``up`` flips on a failed command or ping
    (down at once) and on the next good ping (up). ``on_error(op)`` counts each failed
    command (the server's metrics)."""

    def __init__(self, client: redis.Redis, on_error: Callable[[str], None] | None = None) -> None:
        self._client = client  # its own small pool (HEALTH_CONNECTIONS), not the app's
        self._on_error = on_error
        self.up = True
        self.reason = ""
        self.last_fault = -math.inf  # time.monotonic() of the last failed command
        self.became_up = asyncio.Event()
        self.became_up.set()
        self._recheck: asyncio.Task[None] | None = None
        self._last_recheck = -math.inf

    def since_fault(self) -> float:
        """Seconds since a command last failed (``inf`` when none has)."""
        return time.monotonic() - self.last_fault

    def failed(self, op: str, exc: BaseException) -> None:
        """A command ``op`` failed because of Redis."""
        if self._on_error is not None:
            self._on_error(op)
        if pool_exhausted(exc):
            # Busy, not down: the command failed, Redis answers (the monitor's own
            # connection says otherwise if it does not).
            log.warning("redis_pool_exhausted", op=op, wait_s=POOL_WAIT_S)
            return
        reason = f"{type(exc).__name__}: {exc}"[:200]
        if self.up:
            log.warning("redis_down", op=op, reason=reason)
        self.up = False
        self.reason = reason
        self.last_fault = time.monotonic()
        self.became_up.clear()

    def succeeded(self) -> None:
        if not self.up:
            log.info("redis_up")
        self.up = True
        self.reason = ""
        self.became_up.set()

    async def check(self) -> None:
        """Ping once, within :data:`COMMAND_TIMEOUT_S`; raises when Redis does not answer."""
        try:
            await asyncio.wait_for(self._client.ping(), COMMAND_TIMEOUT_S)
        except REDIS_FAULTS as exc:
            self.failed("ping", exc)
            raise
        self.succeeded()

    async def confirm_down(self) -> bool:
        """Whether Redis is still down, asked by a request that found it marked down: one
        shared ping (at most one per :data:`RECHECK_EVERY_S`), waited for at most
        :data:`RECHECK_WAIT_S`. ``False`` when Redis answers again."""
        if self.up:
            return False
        now = time.monotonic()
        if self._recheck is None and now - self._last_recheck >= RECHECK_EVERY_S:
            self._last_recheck = now
            self._recheck = asyncio.create_task(self._ping_quietly(), name="redis-recheck")
        if self._recheck is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._recheck), RECHECK_WAIT_S)
        return not self.up

    async def _ping_quietly(self) -> None:
        try:
            with contextlib.suppress(*REDIS_FAULTS):
                await self.check()
        finally:
            self._recheck = None

    async def run(self) -> None:
        while True:
            with contextlib.suppress(*REDIS_FAULTS):
                await self.check()
            await asyncio.sleep(CHECK_INTERVAL_S)
