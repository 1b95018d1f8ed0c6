"""The two backends every interface of :mod:`state` is tested against (the shape
Phoenix.PubSub uses for its adapters: one suite, both implementations).

A conformance module parametrizes its fixture over :data:`BACKENDS`; ``"redis"`` runs
against the shared Redis (``CERO_TEST_REDIS_URL``, 127.0.0.1:6379 by default) under a
fresh random key prefix per test, deleted afterwards. Without a reachable Redis the Redis
half skips with the reason, except under ``CI=true`` (then it fails).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from cluster.state.connection import RedisHealth, connect
from cluster.state.shared import RedisShared
from tests.cluster_harness import REDIS_URL, require_redis

BACKENDS = ["memory", "redis"]


@contextlib.asynccontextmanager
async def redis_shared() -> AsyncIterator[RedisShared]:
    """A client, its health and a key prefix no other test uses; the keys go at the end."""
    await require_redis(REDIS_URL)
    client = connect(REDIS_URL, 8)
    prefix = f"cero-state-test-{secrets.token_hex(6)}:"
    try:
        yield RedisShared(client, RedisHealth(client), prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextlib.asynccontextmanager
async def dead_redis() -> AsyncIterator[RedisShared]:
    """A client of a Redis that is not there (a refused port): every command fails."""
    client = connect("redis://127.0.0.1:1/0")
    try:
        yield RedisShared(client, RedisHealth(client), "cero-state-dead:")
    finally:
        await client.aclose()
