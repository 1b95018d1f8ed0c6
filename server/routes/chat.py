"""``POST /api/chat``: start a turn and stream it back (SSE or NDJSON by ``Accept``).

The response is one more subscriber of the conversation's log, from this send's user
``message`` event to this generation's terminal event. Closing it never stops the
generation: only an explicit cancel does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11

from actors.api import TERMINAL, Action, Event, GenerationTiming, SendResult
from server.auth.current import CurrentUser, require_user
from server.chat.request import ChatRequest
from server.chat.service import rebuilt_events, start_chat
from server.core.app_keys import SETTINGS
from server.http.bodies import read_model
from server.ops.metrics import METRICS
from server.transports.liveness import watching
from server.transports.ndjson import NdjsonRenderer
from server.transports.response_pump import Render, ResponsePump
from server.transports.sse import open_sse, ping_frame, sse_chunked, sse_frame
from server.transports.wire import RawWriter, chunk, send_headers

routes = web.RouteTableDef()

#: A chat response must not lose tokens: its bound is far above the live default
#: (tokens merge, so only bytes grow, by the answer's size).
CHAT_MAX_EVENTS = 100_000
CHAT_MAX_BYTES = 64 << 20


def wants_sse(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    timing = request.app[METRICS].turn_timing(request)
    entered = timing.span("auth", timing.started)
    user = require_user(request)
    body = await read_model(request, ChatRequest)
    timing.span("body", entered)
    return await stream_turn(request, user, body, timing)


async def stream_turn(
    request: web.Request,
    user: CurrentUser,
    body: ChatRequest,
    timing: GenerationTiming,
    *,
    action: Action = "send",
    target: str | None = None,
) -> web.StreamResponse:
    """Start a turn (a send, or a branch operation on ``target``) and stream it back:
    ``POST /api/chat`` and the branch routes (:mod:`server.routes.branches`)."""
    settings = request.app[SETTINGS]
    chunked = request.version >= HttpVersion11
    sse = wants_sse(request)
    generation: dict[str, str] = {}

    def stop_when(event: Event) -> bool:
        return event.type in TERMINAL and event.data.get("generationId") == generation.get("id")

    writer = RawWriter(request)
    renderer: NdjsonRenderer | None = None
    metrics = request.app[METRICS]
    transport = "sse" if sse else "ndjson"
    on_reset = metrics.slow_resets.labels(transport).inc
    if sse:
        feed = ResponsePump(
            writer,
            sse_chunked if chunked else sse_frame,
            stop_when=stop_when,
            ping=ping_frame(chunked),
            ping_interval=settings.sse_ping_interval,
            on_reset=on_reset,
        )
    else:
        renderer = NdjsonRenderer(body.conversationId or "", chunked)
        feed = ResponsePump(
            writer, renderer, stop_when=stop_when, use_direct=False, on_reset=on_reset
        )
    feed.render = _timed_first_token(feed.render, timing, metrics.ttft.labels(transport).observe)
    result = await start_chat(
        request.app,
        user,
        body,
        feed.spec(max_events=CHAT_MAX_EVENTS, max_bytes=CHAT_MAX_BYTES),
        timing=timing,
        action=action,
        target=target,
    )
    generation["id"] = result.generation_id
    if renderer is not None:
        renderer.conversation_id = result.conversation_id
    metrics.connections.labels(transport).inc()
    # From here on the subscription exists: whatever happens (the client may already be
    # gone), it is released, or presence and the actor's idle stop would be wrong forever.
    try:
        with watching(request.app, user, feed):  # ends with the session (revoked, expired)
            return await _stream(request, result, feed, renderer, sse=sse, chunked=chunked)
    finally:
        metrics.connections.labels(transport).dec()
        if result.subscription is not None and result.actor is not None:
            await result.actor.unsubscribe(result.subscription)


def _timed_first_token(
    render: Render, timing: GenerationTiming, ttft: Callable[[float], None]
) -> Render:
    """``render`` that observes ``first_write`` and ``server_ttft`` (and ``ttft``, the
    operator's ``cero_time_to_first_token_seconds``) when it renders the first token (the
    frame is written right after it is rendered)."""
    pending = True

    def timed(event: Event) -> bytes | None:
        nonlocal pending
        frame = render(event)
        if pending and event.type == "token":
            pending = False
            now = timing.since("first_write", "first_token")
            now = timing.span("server_ttft", timing.started, now)
            ttft(now - timing.started)
        return frame

    return timed


async def _stream(
    request: web.Request,
    result: SendResult,
    feed: ResponsePump,
    renderer: NdjsonRenderer | None,
    *,
    sse: bool,
    chunked: bool,
) -> web.StreamResponse:
    headers = {"X-Conversation-Id": result.conversation_id, "X-Generation-Id": result.generation_id}
    if sse:
        response, _, _ = await open_sse(request, headers)
    else:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson; charset=utf-8",
                "Cache-Control": "no-cache, no-store",
                **headers,
            }
        )
        await response.prepare(request)
        send_headers(response)
        feed.writer.set_user_timeout()
    if result.timing is not None:
        result.timing.since("respond", "answered")
    with contextlib.suppress(ConnectionError):
        if result.subscription is not None:
            await feed.run(result.subscription)
        else:
            for data in rebuilt_events(result):
                kind = str(data["type"])
                if renderer is not None:
                    frame = renderer.render(kind, data)
                else:
                    raw = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                    frame = chunk(raw) if chunked else raw
                if frame is not None:
                    feed.writer.write(frame)
        await response.write_eof()
    return response
