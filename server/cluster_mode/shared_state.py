"""Cluster mode's shared state, installed: when ``app[REDIS]`` is set, the in-memory limits,
OAuth states and wrong-code counts are replaced by their Redis twins
(:mod:`cluster.state`), and the session store gets :class:`RedisRevocations` so every
process sees every revocation. Without ``CERO_REDIS_URL`` the ``Memory*`` classes of
:mod:`state` stay in place.

What is shared, how, and what a Redis fault does: :mod:`cluster.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import Counter, Gauge

from cluster.state.oauth_states import RedisOAuthStates
from cluster.state.revocations import RedisRevocations
from cluster.state.shared import RedisShared
from cluster.state.stream_limits import RedisStreamLimits
from cluster.state.user_limits import RedisUserLimits
from cluster.state.window import RedisWindow, window_limiter
from cluster.state.wrong_codes import RedisWrongCodes
from server.auth.device_routes import ISSUE_LIMITER
from server.auth.github_routes import OAUTH_STATES
from server.auth.sessions import SESSIONS
from server.auth.sign_in_limit import SIGN_IN_LIMITER
from server.auth.verification import LIMITER
from server.core.app_keys import REDIS, REDIS_HEALTH, SETTINGS
from server.limits.stream_limits import STREAM_LIMITS
from server.limits.user_limits import USER_LIMITS, UserLimitsApi
from server.ops.metrics import METRICS
from state.user_limits import HOUR_S, MINUTE_S


async def shared_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the Redis client's and the chat runtime's): in cluster mode,
    replace the in-memory limits, OAuth states and revocations with the Redis ones."""
    client = app[REDIS]
    if client is None:
        yield
        return
    settings = app[SETTINGS]
    health = app[REDIS_HEALTH]
    shared = RedisShared(client, health, settings.redis_prefix)
    revocations = RedisRevocations(shared)
    store = app[SESSIONS]
    store.shared = revocations
    app[OAUTH_STATES] = RedisOAuthStates(shared)
    app[LIMITER] = RedisWrongCodes(shared)
    limiter = window_limiter(client, settings.redis_prefix)
    app[ISSUE_LIMITER] = RedisWindow(
        limiter, health, "device-codes", settings.device_code_limit, settings.device_code_window
    )
    app[SIGN_IN_LIMITER] = RedisWindow(
        limiter, health, "sign-in", settings.sign_in_limit, settings.sign_in_window
    )
    metrics = app[METRICS]
    streams = RedisStreamLimits(
        shared,
        per_user=settings.max_streams_per_user,
        per_ip=settings.max_streams_per_ip,
        on_refusal=metrics.limit_refusals_by,
    )
    app[STREAM_LIMITS] = streams
    limits = RedisUserLimits(
        shared,
        max_generations=settings.max_generations_per_user,
        new_conversations=RedisWindow(
            limiter, health, "new-conversations", settings.new_conversations_per_hour, HOUR_S
        ),
        sends=RedisWindow(limiter, health, "sends", settings.sends_per_minute, MINUTE_S),
        on_refusal=metrics.limit_refusals_by,
    )
    app[USER_LIMITS] = UserLimitsApi(limits)
    received = Counter(
        "cero_revocations_received",
        "Session revocations received from Redis (published by any process)",
        registry=metrics.registry,
    )
    slots = Gauge(
        "cero_generation_slots_held",
        "Generation slots this process holds in Redis (renewed while held)",
        registry=metrics.registry,
    )
    slots.set_function(lambda: float(limits.slots_held))

    def on_revoked(session_id: str) -> None:
        received.inc()
        store.note_revoked(session_id)

    tasks = [
        asyncio.create_task(revocations.listen(on_revoked), name="revocations"),
        asyncio.create_task(limits.leases.renew_forever(), name="generation-slots"),
        asyncio.create_task(streams.leases.renew_forever(), name="stream-slots"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await limits.close()
        await streams.close()
