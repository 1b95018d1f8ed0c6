"""``GET /api/ws``: one socket, many conversation subscriptions, commands both ways.

Auth happens before the upgrade (cookie with a trusted ``Origin``, ``?token=``, or the
``bearer.<token>`` subprotocol). Events are written as pre-built frames straight to the
transport while the socket keeps up; a lagging subscription queues (tokens merge) and past
its bound the socket is closed with 4008 so the client resumes from its cursor. The socket
lives as long as its session: revoked or expired, it closes with 4001
(:mod:`server.transports.liveness`). Once a Close frame is queued, by whichever path,
nothing more is written to it (:mod:`server.transports.ws_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from actors.conversation import ConversationActor, SubscribeSpec
from actors.hub import Event, Subscription
from server.auth.csrf import origin_trusted
from server.auth.current import CurrentUser, current_user, user_for_cookie, user_for_token
from server.auth.rate_limit import SlidingWindow
from server.chat_service import cancel_generation, rebuilt_events, start_chat, with_actor
from server.db import is_unavailable
from server.errors import ApiError
from server.state import METRICS, SETTINGS
from server.transports.liveness import LIVE_SESSIONS, watching
from server.transports.protocol import (
    Cancel,
    ClientFrame,
    FrameError,
    Ping,
    Send,
    Subscribe,
    Unsubscribe,
    parse_frame,
)
from server.transports.wire import HIGH_WATER, RawWriter, ws_close_frame, ws_text_frame
from server.transports.ws_socket import CeroWebSocket

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

SLOW_CONSUMER = 4008
SESSION_ENDED = 4001
ABUSE_LIMIT = 20
ABUSE_WINDOW_S = 10.0
SLOW_CLOSE_GRACE_S = 30.0
SUBPROTOCOL = "cero.v1"
SOCKETS: web.AppKey[weakref.WeakSet[Any]] = web.AppKey("ws_sockets")


def ws_frame(event: Event) -> bytes:
    frame = event.frames.get("ws")
    if frame is None:
        frame = ws_text_frame(event.json)
        event.frames["ws"] = frame
    return frame


async def authenticate(request: web.Request) -> tuple[CurrentUser, str | None]:
    """The user of a handshake and the subprotocol to answer with."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    offered = [p for p in offered if p]
    token = request.query.get("token")
    chosen: str | None = SUBPROTOCOL if SUBPROTOCOL in offered else None
    for proto in offered:
        if proto.startswith("bearer."):
            token = token or proto.removeprefix("bearer.")
            chosen = chosen or proto  # a browser needs one offered protocol echoed back
    resolved = current_user(request)  # an Authorization: Bearer header (CLI clients)
    if resolved is not None and resolved.via == "bearer":
        return resolved, chosen
    if token:
        user = await user_for_token(request.app, token)
        if user is None:
            raise ApiError(401, "unauthorized", "Unauthorized")
        return user, chosen
    user = await user_for_cookie(request)
    if user is None:
        raise ApiError(401, "unauthorized", "Unauthorized")
    if not origin_trusted(request):
        raise ApiError(403, "forbidden", "Untrusted Origin for a cookie-authenticated WebSocket")
    return user, chosen


class Connection:
    """One socket. Kept small: an idle authenticated socket costs only this object (the
    pump task and the abuse window are created on first use)."""

    __slots__ = (
        "__weakref__",
        "app",
        "closer",
        "closing",
        "faults",
        "pump_task",
        "ready",
        "subs",
        "user",
        "wake",
        "writer",
        "ws",
    )

    def __init__(self, request: web.Request, user: CurrentUser) -> None:
        self.app = request.app
        self.user = user
        self.writer = RawWriter(request)
        self.subs: dict[str, tuple[ConversationActor, Subscription]] = {}
        self.ready: set[Subscription] = set()
        self.wake = asyncio.Event()
        #: No more commands, no more frames: a Close frame is queued (or about to be).
        self.closing = False
        self.faults: SlidingWindow | None = None
        self.pump_task: asyncio.Task[None] | None = None
        self.ws: web.WebSocketResponse | None = None
        self.closer: asyncio.Task[bool] | None = None

    def stop_writing(self) -> None:
        """Called before any Close frame is queued (RFC 6455 §5.5.1): no data frame may
        follow it, from the publisher's direct path, the pump or a command's answer."""
        self.closing = True
        self.writer.shut = True
        self.wake.set()

    def session_ended(self) -> None:
        """The session was revoked or expired: close with 4001 (a liveness watcher)."""
        if self.closing:
            return
        self.stop_writing()
        ws = self.ws
        if ws is not None:
            self.closer = asyncio.get_running_loop().create_task(
                ws.close(code=SESSION_ENDED, message=b"session ended")
            )

    # -- outbound ------------------------------------------------------------------------

    def send_json(self, data: dict[str, object]) -> None:
        self.writer.write(ws_text_frame(orjson.dumps(data)))

    def _direct(self, gate: list[bool]) -> Callable[[Event], bool]:
        """The publisher's fast path for one subscription: one frame, one write.

        ``gate[0]`` opens once the subscription's replay (or ``subscribed``) went out, so
        nothing live can overtake it."""
        writer = self.writer
        transport = writer.transport
        if transport is None:
            return lambda event: False

        def direct(event: Event) -> bool:
            if (
                not gate[0]
                or writer.shut
                or transport.get_write_buffer_size() > HIGH_WATER
                or transport.is_closing()
            ):
                return False
            frame = event.frames.get("ws")
            if frame is None:
                frame = ws_frame(event)
            transport.write(frame)
            return True

        return direct

    def close_slow(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.app[METRICS].ws_closed_slow.inc()
        # Behind whatever is already buffered: the client sees every event it was sent,
        # then the close (and nothing after it), and resumes from its last cursor.
        self.writer.write_last(ws_close_frame(SLOW_CONSUMER, "slow consumer"))
        transport = self.writer.transport
        if transport is not None:
            transport.close()  # flushes first; a peer that never reads again is aborted
            asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE_S, transport.abort)
        self.wake.set()

    def notify(self) -> None:
        """Called by the hub inside ``append``: must not await, may close a laggard."""
        self.wake.set()
        if not self.closing:
            for _, sub in self.subs.values():
                if sub.overflowed:
                    self.close_slow()
                    break

    async def pump(self) -> None:
        while not self.closing and not self.writer.closing:
            await self.wake.wait()
            self.wake.clear()
            frames: list[bytes] = []
            for conversation_id, (_, sub) in list(self.subs.items()):
                if sub not in self.ready:
                    continue
                if sub.overflowed:
                    self.close_slow()
                    return
                for event in sub.take():
                    frames.append(ws_frame(event))
                if sub.closed and not sub.pending():
                    # The conversation was deleted, or its actor stopped or crashed.
                    self.subs.pop(conversation_id, None)
                    self.ready.discard(sub)
                    frames.append(
                        self.frame(
                            {
                                "type": "unsubscribed",
                                "reason": "closed",
                                "conversationId": conversation_id,
                            }
                        )
                    )
            if frames:
                self.writer.write(b"".join(frames))
                try:
                    await self.writer.drain()
                except ConnectionError:
                    return

    # -- inbound -------------------------------------------------------------------------

    @staticmethod
    def frame(data: dict[str, object]) -> bytes:
        return ws_text_frame(orjson.dumps(data))

    def fault(
        self,
        code: str,
        message: str,
        *,
        counts: bool = True,
        retry_after: object = None,
    ) -> bool:
        """Answer a bad frame; ``False`` when the peer went past the abuse limit.

        Refusals of well-formed requests (busy, not found, limits) are answered the same
        way but do not count as abuse. A rate limit's wait rides along as ``retryAfter``."""
        data: dict[str, object] = {"type": "fault", "code": code, "error": message}
        if retry_after is not None:
            data["retryAfter"] = retry_after
        self.send_json(data)
        if not counts:
            return True
        if self.faults is None:
            self.faults = SlidingWindow(ABUSE_LIMIT, ABUSE_WINDOW_S)
        return self.faults.hit("") is None

    def _live(self, conversation_id: str) -> bool:
        entry = self.subs.get(conversation_id)
        return entry is not None and not entry[1].closed

    def _adopt(
        self, conversation_id: str, actor: ConversationActor, sub: Subscription, gate: list[bool]
    ) -> None:
        """Start delivering ``sub``: what it already holds goes out before anything live."""
        self.subs[conversation_id] = (actor, sub)
        frames = [ws_frame(event) for event in sub.take()]
        if frames:
            self.writer.write(b"".join(frames))
        self.ready.add(sub)
        gate[0] = True
        if self.pump_task is None:
            self.pump_task = asyncio.get_running_loop().create_task(self.pump())

    def _full(self) -> bool:
        """At the cap of subscriptions per socket: say so (``too_many_subscriptions``)."""
        limit = self.app[SETTINGS].ws_max_subscriptions
        if len(self.subs) < limit:
            return False
        self.app[METRICS].limit_refusals.labels("ws_subscriptions").inc()
        self.fault(
            "too_many_subscriptions",
            f"At most {limit} subscriptions per socket; unsubscribe from one first",
            counts=False,
        )
        return True

    async def subscribe(self, conversation_id: str, after: str | None) -> None:
        if conversation_id in self.subs:
            await self.unsubscribe(conversation_id)
        elif self._full():
            return
        gate = [False]
        spec = SubscribeSpec(notify=self.notify, direct=self._direct(gate))

        async def command(actor: ConversationActor) -> tuple[ConversationActor, Subscription]:
            return actor, await actor.subscribe(after, spec)

        try:
            actor, sub = await with_actor(self.app, conversation_id, self.user.id, command)
        except ApiError as exc:
            self.fault(exc.code, exc.message, counts=False)
            return
        self.send_json(
            {
                "type": "subscribed",
                "conversationId": conversation_id,
                "epoch": actor.hub.epoch,
                "seq": sub.start_seq,
                "recovered": sub.recovered,
            }
        )
        self._adopt(conversation_id, actor, sub, gate)

    async def unsubscribe(self, conversation_id: str) -> bool:
        entry = self.subs.pop(conversation_id, None)
        if entry is None:
            return False
        actor, sub = entry
        self.ready.discard(sub)
        await actor.unsubscribe(sub)
        return True

    async def handle(self, text: str) -> bool:
        if self.closing:
            return True  # closing: a late frame starts nothing and gets no answer
        try:
            frame = parse_frame(text)
        except FrameError as exc:
            return self.fault(exc.code, exc.message)
        try:
            await self._dispatch(frame)
        except ApiError as exc:
            self.fault(exc.code, exc.message, counts=False, retry_after=exc.extra.get("retryAfter"))
        except Exception as exc:
            if is_unavailable(exc):  # as on HTTP: a database that cannot serve now
                self.fault("not_ready", "The database is unavailable; retry shortly", counts=False)
                return True
            log.exception("ws_command_failed", frame=type(frame).__name__, user_id=self.user.id)
            self.fault("internal", "The command failed", counts=False)
        return True

    async def _dispatch(self, frame: ClientFrame) -> None:
        if isinstance(frame, Ping):
            self.send_json({"type": "ack", "of": "ping"})
        elif isinstance(frame, Subscribe):
            await self.subscribe(frame.conversation_id, frame.after)
        elif isinstance(frame, Unsubscribe):
            done = await self.unsubscribe(frame.conversation_id)
            self.send_json(
                {
                    "type": "ack",
                    "of": "unsubscribe",
                    "conversationId": frame.conversation_id,
                    "unsubscribed": done,
                }
            )
        elif isinstance(frame, Cancel):
            cancelled = await cancel_generation(
                self.app, frame.conversation_id, self.user.id, frame.generation_id
            )
            self.send_json(
                {
                    "type": "ack",
                    "of": "cancel",
                    "conversationId": frame.conversation_id,
                    "cancelled": cancelled,
                }
            )
        elif isinstance(frame, Send):
            await self.send(frame)

    async def send(self, frame: Send) -> None:
        # The one command that starts work re-checks the session in the database, so a
        # revocation by another process is never a second too late for it.
        if not await self.app[LIVE_SESSIONS].still_valid(self.user.session_id):
            self.session_ended()
            return
        body = frame.request
        gate = [False]
        spec = None
        if body.conversationId is None or not self._live(body.conversationId):
            # The send subscribes this socket to its conversation: within the cap too.
            if body.conversationId not in self.subs and self._full():
                return
            spec = SubscribeSpec(notify=self.notify, direct=self._direct(gate))
        result = await start_chat(self.app, self.user, body, spec)
        sub = result.subscription
        if sub is not None and result.actor is not None and self._live(result.conversation_id):
            # A retry without conversationId landed on a conversation this socket already
            # follows: one subscription per conversation, or events would arrive twice.
            await result.actor.unsubscribe(sub)
            sub = None
        self.send_json(
            {
                "type": "ack",
                "of": "send",
                "conversationId": result.conversation_id,
                "generationId": result.generation_id,
                "userMessageId": result.user_message.id,
                "messageId": result.assistant_message_id,
                "retried": result.retried,
            }
        )
        if sub is not None and result.actor is not None:
            if result.conversation_id in self.subs:  # a closed one: replace it
                await self.unsubscribe(result.conversation_id)
            self._adopt(result.conversation_id, result.actor, sub, gate)
        elif result.answer is not None and not self._live(result.conversation_id):
            # A retry whose events left the log: init and the stored outcome.
            self.writer.write(b"".join(self.frame(data) for data in rebuilt_events(result)))

    async def close_all(self) -> None:
        for conversation_id in list(self.subs):
            with contextlib.suppress(Exception):
                await self.unsubscribe(conversation_id)


@routes.get("/api/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    user, protocol = await authenticate(request)
    settings = request.app[SETTINGS]
    connection = Connection(request, user)
    ws = CeroWebSocket(
        before_close=connection.stop_writing,
        protocols=[protocol] if protocol else (),
        heartbeat=settings.ws_heartbeat,
        pong_timeout=settings.ws_heartbeat,
        # aiohttp refuses a message of max_msg_size bytes; the contract allows the limit.
        max_msg_size=settings.ws_max_frame + 1,
        compress=False,
        autoping=True,
    )
    connection.ws = ws
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    connection.writer.set_user_timeout()
    metrics = request.app[METRICS]
    metrics.connections.labels("ws").inc()
    try:
        with watching(request.app, user, connection):
            await _serve(ws, connection)
    finally:
        pump = connection.pump_task
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        await connection.close_all()
        if connection.closer is not None:
            with contextlib.suppress(Exception):
                await connection.closer
        metrics.connections.labels("ws").dec()
    return ws


async def _serve(ws: web.WebSocketResponse, connection: Connection) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            keep = await connection.handle(message.data)
        elif message.type == WSMsgType.BINARY:
            keep = connection.fault("invalid_frame", "Binary frames are not supported")
        else:
            continue
        if not keep:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many bad frames")
            return
        if connection.closing and connection.closer is None:
            return  # closed as a slow consumer (4008)


async def close_sockets(app: web.Application) -> None:
    """on_shutdown (after the actors ended their generations): 1001 to every socket."""
    live: weakref.WeakSet[Any] = app[SOCKETS]
    sockets = list(live)
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets),
        return_exceptions=True,
    )


def setup(app: web.Application) -> None:
    sockets: weakref.WeakSet[Any] = weakref.WeakSet()
    app[SOCKETS] = sockets
    app.add_routes(routes)
    app.on_shutdown.append(close_sockets)
