"""``GET /api/account/events``: the user's account channel as Server-Sent Events (docs/api.md,
Account channel); the WebSocket twin is ``subscribe`` with ``channel: "account"``."""

from __future__ import annotations

import contextlib

from aiohttp import web

from server.auth.current import require_user
from server.chat.service import refuse_while_draining
from server.core.app_keys import SETTINGS
from server.limits.stream_limits import open_stream
from server.ops.metrics import METRICS
from server.storage.account_channel import ACCOUNT
from server.transports.liveness import watching
from server.transports.replay_budget import SSE_REPLAY, replay_within
from server.transports.response_pump import ResponsePump
from server.transports.sse import open_sse, ping_frame, sse_chunked, sse_frame
from server.transports.wire import RawWriter

routes = web.RouteTableDef()


@routes.get("/api/account/events")
async def account_events(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    refuse_while_draining(request.app)
    slot = await open_stream(request, user.id)  # one of the user's live streams
    try:
        settings = request.app[SETTINGS]
        after = request.headers.get("Last-Event-ID") or request.query.get("after") or None
        if after is not None and len(after) > 128:
            after = "-"  # a cursor no log has: `reset`
        chunked = request.version >= (1, 1)
        render = sse_chunked if chunked else sse_frame
        metrics = request.app[METRICS]
        feed = ResponsePump(
            RawWriter(request),
            render,
            ping=ping_frame(chunked),
            ping_interval=settings.sse_ping_interval,
            on_reset=metrics.slow_resets.labels("sse").inc,
        )
        channel = request.app[ACCOUNT]
        log, sub = await channel.subscribe(user.id, after, feed.spec())
        try:
            budget = request.app[SSE_REPLAY].of(user.id)
            replay = replay_within(request.app, sub, render, budget) if after is not None else b""
            metrics.connections.labels("sse").inc()
            try:
                response, writer, _ = await open_sse(request, {})
                feed.writer = writer
                with contextlib.suppress(ConnectionError), watching(request.app, user, feed):
                    await feed.run(sub, replay)
                with contextlib.suppress(ConnectionError):
                    await response.write_eof()
                return response
            finally:
                metrics.connections.labels("sse").dec()
        finally:
            channel.unsubscribe(log, sub)
    finally:
        slot.release()
