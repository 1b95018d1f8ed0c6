"""The app state keys (``web.AppKey``) the whole server shares whose values are not of a
``server`` type: the settings, the actors' registry and catalog, the per-client locks, and
cluster mode's Redis client and its health.

The rule for every key: a key lives beside the type of its value, and its users import it
from there. A key whose value is a ``server`` type is declared in the module that defines
that type (``ENGINE`` in :mod:`server.storage.db` beside ``Engine``, ``WRITER`` in
:mod:`server.storage.batch_writer`, ``METRICS`` in :mod:`server.ops.metrics`,
``ADMISSION`` and ``USER_LIMITS`` in :mod:`server.limits`, ``SESSIONS`` in
:mod:`server.auth.sessions`, ...): its users sit above that module in the layers, so the
import is allowed, and no module names a type from a package above it, not even under
``TYPE_CHECKING``. A key whose value's type comes from outside ``server`` (actors,
cluster mode, redis, the standard library) is declared here when the server shares it, or
in the module that uses it when only one package does (``STREAM_LIMITS``,
``SIGN_IN_LIMITER``...).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

import redis.asyncio as redis
from aiohttp import web

from server.core.config import Settings

if TYPE_CHECKING:
    from actors.api import Registry
    from actors.models.catalog import Catalog
    from cluster.state.connection import RedisHealth

SETTINGS = web.AppKey("settings", Settings)
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog")
CLIENT_LOCKS: web.AppKey[weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]] = web.AppKey(
    "client_locks"
)
REDIS: web.AppKey[redis.Redis | None] = web.AppKey("redis")
REDIS_HEALTH: web.AppKey[RedisHealth] = web.AppKey("redis_health")
