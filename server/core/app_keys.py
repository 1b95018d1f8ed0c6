"""Typed application state keys (``web.AppKey``): what the app holds for its lifetime."""

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
    from server.auth.sessions import SessionStore
    from server.limits.admission import Admission
    from server.limits.user_limits import UserLimitsApi
    from server.ops.metrics import Metrics
    from server.storage.batch_writer import BatchWriter
    from server.storage.db import Engine

SETTINGS = web.AppKey("settings", Settings)
ENGINE: web.AppKey[Engine] = web.AppKey("engine")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog")
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
WRITER: web.AppKey[BatchWriter] = web.AppKey("batch_writer")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
CLIENT_LOCKS: web.AppKey[weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]] = web.AppKey(
    "client_locks"
)
USER_LIMITS: web.AppKey[UserLimitsApi] = web.AppKey("user_limits")
REDIS: web.AppKey[redis.Redis | None] = web.AppKey("redis")
REDIS_HEALTH: web.AppKey[RedisHealth] = web.AppKey("redis_health")
