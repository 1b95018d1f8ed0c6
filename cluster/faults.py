"""What a Redis command that failed because of Redis raises: connection refused or reset,
timeouts, a Redis restarting (``LOADING``), a pool that found no free connection in time.
Every part of cluster mode (and the server around it) catches exactly these."""

from __future__ import annotations

from redis.exceptions import RedisError

REDIS_FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
