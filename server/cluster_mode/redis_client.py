"""The process's Redis client in cluster mode (``CERO_REDIS_URL``); ``None`` without it.

The client and its health live in :mod:`cluster.state.connection`; this module opens and
closes them with the app (:func:`redis_client`). Everything shared across processes
(leases, logs, forwarded commands, limits, revocations) goes through ``app[REDIS]``; code
that also runs in single-process mode checks ``app[REDIS] is None`` and keeps its in-memory
path. Every key starts with ``CERO_REDIS_PREFIX`` (:func:`key`).

While Redis is down, a use-case that needs it answers ``503 not_ready`` instead of
starting work that would fail halfway: :func:`server.limits.refusals.require_redis`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import redis.asyncio as redis
from aiohttp import web

from cluster.state.connection import RedisHealth, connect
from server.core.app_keys import REDIS, REDIS_HEALTH, SETTINGS
from server.ops.metrics import METRICS


def key(app: web.Application, *parts: str) -> str:
    """``CERO_REDIS_PREFIX`` + the parts joined with ``:``."""
    return app[SETTINGS].redis_prefix + ":".join(parts)


def _count_errors(app: web.Application) -> Callable[[str], None]:
    """``cero_redis_errors{op}``, once the metrics have bound it."""

    def count(op: str) -> None:
        errors = app[METRICS].redis_errors
        if errors is not None:
            errors.labels(op).inc()

    return count


async def redis_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the client when cluster mode is on; start-up does not wait for
    Redis (``/readyz`` reports it), so a process can start while Redis is restarting."""
    settings = app[SETTINGS]
    url = settings.redis_url
    client = app[REDIS] = connect(url, settings.redis_max_connections) if url else None
    monitor: asyncio.Task[None] | None = None
    health_client: redis.Redis | None = None
    if url is not None:
        health_client = connect(url)
        health = app[REDIS_HEALTH] = RedisHealth(health_client, _count_errors(app))
        app[METRICS].bind_redis(health)
        monitor = asyncio.create_task(health.run(), name="redis-health")
    try:
        yield
    finally:
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if client is not None:
            await client.aclose()
        if health_client is not None:
            await health_client.aclose()
