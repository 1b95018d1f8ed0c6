"""Moving windows in Redis: the ``limits`` package's moving window on its Redis storage,
sharing our connection pool (device codes issued and sign-in requests per address, sends
per minute and new conversations per hour per user)."""

from __future__ import annotations

import math
import time
from typing import Any

import redis.asyncio as redis
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from cluster.faults import REDIS_FAULTS
from cluster.state.connection import RedisHealth
from state.errors import Unavailable


def window_limiter(client: redis.Redis, prefix: str) -> MovingWindowRateLimiter:
    """The ``limits`` moving-window strategy on its Redis storage, over our client's pool."""
    # limits types its client options as scalars; a connection pool is accepted too.
    options: dict[str, Any] = {"connection_pool": client.connection_pool}
    storage = RedisStorage(
        "async+redis://", implementation="redispy", key_prefix=f"{prefix}limits", **options
    )
    return MovingWindowRateLimiter(storage)


class RedisWindow:
    """:class:`state.window.Window` for every process of a cluster: at most ``limit`` events
    per key in any ``window`` seconds (rounded up to whole seconds)."""

    def __init__(
        self,
        limiter: MovingWindowRateLimiter,
        health: RedisHealth,
        name: str,
        limit: int,
        window: float,
    ) -> None:
        self._limiter = limiter
        self.health = health
        self.name = name
        self._limit = limit
        self._item = RateLimitItemPerSecond(limit, max(1, math.ceil(window)), namespace=name)

    @property
    def limit(self) -> int:
        return self._limit

    async def hit(self, key: str) -> int | None:
        try:
            if await self._limiter.hit(self._item, key):
                return None
            stats = await self._limiter.get_window_stats(self._item, key)
        except REDIS_FAULTS as exc:
            self.health.failed(self.name, exc)
            raise Unavailable(self.name) from None
        return max(1, math.ceil(stats.reset_time - time.time()))
