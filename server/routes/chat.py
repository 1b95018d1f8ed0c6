"""``POST /api/chat``: start a turn and stream it back (SSE or NDJSON by ``Accept``).

The response is one more subscriber of the conversation's log, from this send's user
``message`` event to this generation's terminal event. Closing it never stops the
generation: only an explicit cancel does.
"""

from __future__ import annotations

import contextlib

import orjson
import structlog
from aiohttp import web
from aiohttp.http import HttpVersion11

from actors.conversation import TERMINAL, SendResult
from actors.hub import Event
from actors.store import StoredMessage
from server.auth.current import require_user
from server.bodies import read_model
from server.chat_service import ChatRequest, start_chat
from server.state import METRICS, REGISTRY, SETTINGS
from server.transports.feed import Feed
from server.transports.ndjson import NdjsonRenderer
from server.transports.sse import open_sse, ping_frame, sse_chunked, sse_frame
from server.transports.wire import RawWriter, chunk, send_headers

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

#: A chat response must not lose tokens: its bound is far above the live default
#: (tokens merge, so only bytes grow, by the answer's size).
CHAT_MAX_EVENTS = 100_000
CHAT_MAX_BYTES = 64 << 20


def wants_sse(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def rebuilt_events(result: SendResult) -> list[tuple[str, dict[str, object]]]:
    """``init`` and the terminal event of a retried turn whose events left the log."""
    answer: StoredMessage | None = result.answer
    base: dict[str, object] = {
        "conversationId": result.conversation_id,
        "generationId": result.generation_id,
    }
    if answer is None:
        return [("error", {**base, "code": "internal", "error": "The answer was not stored"})]
    init: dict[str, object] = {
        **base,
        "type": "init",
        "messageId": answer.id,
        "userMessageId": result.user_message.id,
        "aiModel": answer.model,
    }
    common = {**base, "messageId": answer.id}
    if answer.status == "complete":
        return [
            ("init", init),
            (
                "done",
                {
                    **common,
                    "type": "done",
                    "fullText": answer.content,
                    "finishReason": answer.finish_reason or "STOP",
                    "usage": answer.usage or {},
                    "citations": answer.citations or [],
                },
            ),
        ]
    if answer.status == "cancelled":
        return [
            ("init", init),
            ("cancelled", {**common, "type": "cancelled", "fullText": answer.content}),
        ]
    code = "internal" if answer.status == "error" else "interrupted"
    return [
        ("init", init),
        (
            "error",
            {
                **common,
                "type": "error",
                "code": code,
                "error": f"The answer ended with status {answer.status}",
            },
        ),
    ]


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    body = await read_model(request, ChatRequest)
    settings = request.app[SETTINGS]
    chunked = request.version >= HttpVersion11
    sse = wants_sse(request)
    generation: dict[str, str] = {}

    def stop_when(event: Event) -> bool:
        return event.type in TERMINAL and event.data.get("generationId") == generation.get("id")

    writer = RawWriter(request)
    renderer: NdjsonRenderer | None = None
    if sse:
        render = sse_chunked if chunked else sse_frame
        feed = Feed(
            writer,
            render,
            stop_when=stop_when,
            ping=ping_frame(chunked),
            ping_interval=settings.sse_ping_interval,
        )
    else:
        renderer = NdjsonRenderer(body.conversationId or "", chunked)
        feed = Feed(
            writer,
            renderer,
            stop_when=stop_when,
            ping=None,
            ping_interval=settings.sse_ping_interval,
            use_direct=False,
        )
    result = await start_chat(
        request.app, user, body, feed.spec(max_events=CHAT_MAX_EVENTS, max_bytes=CHAT_MAX_BYTES)
    )
    generation["id"] = result.generation_id
    if renderer is not None:
        renderer.conversation_id = result.conversation_id
    headers = {"X-Conversation-Id": result.conversation_id, "X-Generation-Id": result.generation_id}
    metrics = request.app[METRICS]
    transport = "sse" if sse else "ndjson"
    metrics.connections.labels(transport).inc()
    try:
        if sse:
            response, writer, _ = await open_sse(request, headers)
            feed.writer = writer
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
        if result.subscription is not None:
            try:
                await feed.run(result.subscription)
            except (ConnectionResetError, ConnectionError):
                pass
            finally:
                actor = request.app[REGISTRY].peek(result.conversation_id)
                if actor is not None:
                    await actor.unsubscribe(result.subscription)
        else:
            for kind, data in rebuilt_events(result):
                if renderer is not None:
                    frame = renderer.render(kind, data)
                else:
                    raw = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                    frame = chunk(raw) if chunked else raw
                if frame is not None:
                    writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        metrics.connections.labels(transport).dec()
