"""The process's Redis client in cluster mode (``CERO_REDIS_URL``); ``None`` without it.

One ``redis.asyncio`` client (its own connection pool) per process, opened and closed with
the app. Everything shared across processes (leases, logs, forwarded commands, limits,
revocations) goes through ``app[REDIS]``; code that also runs in single-process mode checks
``app[REDIS] is None`` and keeps its in-memory path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as redis
import structlog
from aiohttp import web

from server.app_keys import REDIS, SETTINGS

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 2.0


def connect(url: str) -> redis.Redis:
    """A client that answers quickly when Redis is gone (commands raise, nothing hangs)."""
    return redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=10,
        retry_on_timeout=False,
    )


async def redis_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the client when cluster mode is on; start-up does not wait for
    Redis (``/readyz`` reports it), so a process can start while Redis is restarting."""
    url = app[SETTINGS].redis_url
    app[REDIS] = connect(url) if url else None
    try:
        yield
    finally:
        client = app[REDIS]
        if client is not None:
            await client.aclose()
