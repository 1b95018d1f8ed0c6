"""Open live connections per user and per client address: WebSockets (``/api/ws``) and SSE
event streams (``/api/conversations/{id}/events``).

The caps are ``CERO_MAX_STREAMS_PER_USER`` and ``CERO_MAX_STREAMS_PER_IP`` (by
:func:`server.limits.rate_limit.rate_key` of :func:`server.core.client_ip.client_ip`: IPv6
per /64, ``X-Forwarded-For`` only behind a trusted proxy). A connection past either gets
``429 rate_limited`` with ``Retry-After`` *before* the upgrade or the stream starts.

The response stream of ``POST /api/chat`` is not counted: it ends with its generation, and
the generation limits already bound it.

``app[STREAM_LIMITS]`` is a :class:`state.stream_limits.StreamLimits`: ``MemoryStreamLimits``
here, :class:`cluster.state.stream_limits.RedisStreamLimits` in cluster mode (installed by
:mod:`server.cluster_mode.shared_state`). :func:`open_stream` maps its refusals to HTTP.
"""

from __future__ import annotations

from aiohttp import web

from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.limits.rate_limit import rate_key
from server.limits.refusals import as_api_errors
from server.ops.metrics import METRICS
from state.stream_limits import MemoryStreamLimits, StreamLimits, StreamSlot

STREAM_LIMITS: web.AppKey[StreamLimits] = web.AppKey("stream_limits")


async def open_stream(request: web.Request, user_id: str) -> StreamSlot:
    """The slot for the live connection ``request`` is about to start (or 429 / 503)."""
    with as_api_errors():
        return await request.app[STREAM_LIMITS].open(user_id, rate_key(client_ip(request)))


def setup(app: web.Application) -> None:
    """The in-memory limits (cluster mode replaces them:
    :mod:`server.cluster_mode.shared_state`)."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    app[STREAM_LIMITS] = MemoryStreamLimits(
        per_user=settings.max_streams_per_user,
        per_ip=settings.max_streams_per_ip,
        on_refusal=metrics.limit_refusals_by,
    )
