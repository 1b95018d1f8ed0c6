"""``GET /api/ws``: one socket, many conversation subscriptions, commands both ways.

Auth happens before the upgrade (cookie with a trusted ``Origin``, ``?token=``, or the
``bearer.<token>`` subprotocol). Events are written as pre-built frames straight to the
transport while the socket keeps up; a lagging subscription queues (tokens merge) and past
its bound the socket is closed with 4008 so the client resumes from its cursor. The socket
lives as long as its session: revoked or expired, it closes with 4001
(:mod:`server.transports.liveness`). Once a Close frame is queued, by whichever path,
nothing more is written to it (:mod:`server.transports.ws_socket`).

Abuse limits: the socket is one of its user's and its address's live connections, taken
before the upgrade and given back when the handler ends (:mod:`server.limits.stream_limits`), and
its inbound frames go through a token bucket (:mod:`server.transports.frame_rate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from actors.api import CHANNEL, ConversationActor, EventLog, SubscribeSpec, Subscription
from server.chat.service import (
    cancel_generation,
    rebuilt_events,
    refuse_while_draining,
    run_on_actor,
    start_chat,
    switch_branch,
)
from server.core.app_keys import SETTINGS
from server.core.errors import ApiError
from server.limits.stream_limits import open_stream
from server.ops.metrics import METRICS
from server.storage.account_channel import ACCOUNT, AccountChannel
from server.storage.db import is_unavailable
from server.transports.frame_rate import FrameRate, Verdict
from server.transports.liveness import LIVE_SESSIONS
from server.transports.protocol import (
    Cancel,
    ClientFrame,
    FrameError,
    Ping,
    Send,
    Subscribe,
    Switch,
    Unsubscribe,
    UnwatchAccount,
    WatchAccount,
    parse_frame,
)
from server.transports.replay_budget import ReplayBudget, replay_within
from server.transports.ws_auth import authenticate
from server.transports.ws_outbound import ACCOUNT_KEY, Outbound, ws_frame
from server.transports.ws_socket import CeroWebSocket
from state.counting import SlidingWindow

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
ABUSE_LIMIT = 20
ABUSE_WINDOW_S = 10.0
SOCKETS: web.AppKey[weakref.WeakSet[Any]] = web.AppKey("ws_sockets")


class AccountSource:
    """The account channel as one of a socket's subscriptions (``Source``)."""

    __slots__ = ("channel", "log")

    def __init__(self, channel: AccountChannel, log: EventLog) -> None:
        self.channel = channel
        self.log = log

    async def unsubscribe(self, sub: Subscription) -> None:
        self.channel.unsubscribe(self.log, sub)


class Connection(Outbound):
    """One socket: its way out (:class:`Outbound`) and the commands it sends."""

    __slots__ = ()

    # -- inbound -------------------------------------------------------------------------

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

    def _replay(self, sub: Subscription) -> bytes:
        """``sub``'s replay as frames, within the socket's replay budget; past it, ``b""``
        and ``sub`` holds a ``reset`` instead (:mod:`server.transports.replay_budget`)."""
        if self.replay_budget is None:
            self.replay_budget = ReplayBudget(self.app[SETTINGS].replay_bytes_per_minute)
        return replay_within(self.app, sub, ws_frame, self.replay_budget)

    def _adopt(
        self,
        conversation_id: str,
        actor: ConversationActor | AccountSource,
        sub: Subscription,
        gate: list[bool],
        replay: bytes,
    ) -> None:
        """Start delivering ``sub``: its ``replay``, then what it holds, before anything
        live."""
        self.subs[conversation_id] = (actor, sub)
        frames = [ws_frame(event) for event in sub.take()]
        if replay or frames:
            self.writer.write(replay + b"".join(frames))
        gate[0] = True
        self.start_pump()

    def _full(self) -> bool:
        """At the cap of subscriptions per socket: say so (``too_many_subscriptions``)."""
        limit = self.app[SETTINGS].ws_max_subscriptions
        if len(self.subs) < limit:
            return False
        self.app[METRICS].limit_refusals_by("ws_subscriptions")
        self.fault(
            "too_many_subscriptions",
            f"At most {limit} subscriptions per socket; unsubscribe from one first",
            counts=False,
        )
        return True

    async def subscribe(self, conversation_id: str, after: str | None) -> None:
        if conversation_id == ACCOUNT_KEY:  # never a conversation's id
            self.fault("not_found", "Conversation not found", counts=False)
            return
        if conversation_id in self.subs:
            await self.unsubscribe(conversation_id)
        elif self._full():
            return
        gate = [False]
        spec = SubscribeSpec(notify=self.notify, direct=self._direct(gate))

        async def command(actor: ConversationActor) -> tuple[ConversationActor, Subscription]:
            return actor, await actor.subscribe(after, spec)

        try:
            actor, sub = await run_on_actor(self.app, conversation_id, self.user.id, command)
        except ApiError as exc:
            self.fault(exc.code, exc.message, counts=False)
            return
        # Before `subscribed`: a replay over the budget becomes a reset (recovered: false).
        replay = self._replay(sub) if after is not None else b""
        self.send_json(
            {
                "type": "subscribed",
                "conversationId": conversation_id,
                "epoch": actor.epoch,
                "seq": sub.start_seq,
                "recovered": sub.recovered,
            }
        )
        self._adopt(conversation_id, actor, sub, gate, replay)

    async def watch_account(self, after: str | None) -> None:
        """Subscribe this socket to its user's account channel (docs/api.md, Account
        channel); a second ``subscribe`` restarts it from its own cursor."""
        if ACCOUNT_KEY in self.subs:
            await self.unsubscribe(ACCOUNT_KEY)
        elif self._full():
            return
        gate = [False]
        spec = SubscribeSpec(notify=self.notify, direct=self._direct(gate), viewer=False)
        channel = self.app[ACCOUNT]
        log, sub = await channel.subscribe(self.user.id, after, spec)
        replay = self._replay(sub) if after is not None else b""
        self.send_json(
            {
                "type": "subscribed",
                "channel": CHANNEL,
                "epoch": log.epoch,
                "seq": sub.start_seq,
                "recovered": sub.recovered,
            }
        )
        self._adopt(ACCOUNT_KEY, AccountSource(channel, log), sub, gate, replay)

    async def unsubscribe(self, conversation_id: str) -> bool:
        entry = self.subs.pop(conversation_id, None)
        if entry is None:
            return False
        actor, sub = entry
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
        elif isinstance(frame, WatchAccount):
            await self.watch_account(frame.after)
        elif isinstance(frame, UnwatchAccount):
            done = await self.unsubscribe(ACCOUNT_KEY)
            self.send_json(
                {"type": "ack", "of": "unsubscribe", "channel": CHANNEL, "unsubscribed": done}
            )
        elif isinstance(frame, Unsubscribe):
            done = frame.conversation_id != ACCOUNT_KEY and await self.unsubscribe(
                frame.conversation_id
            )
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
        elif isinstance(frame, Switch):
            leaf = await switch_branch(
                self.app, frame.conversation_id, self.user.id, frame.message_id
            )
            self.send_json(
                {
                    "type": "ack",
                    "of": "switch",
                    "conversationId": frame.conversation_id,
                    "activeLeafId": leaf,
                    "messageId": frame.message_id,
                }
            )
        elif isinstance(frame, Send):
            await self.send(frame)

    async def send(self, frame: Send) -> None:
        metrics = self.app[METRICS]
        timing = metrics.turn_timing_from(time.perf_counter(), transport="ws")
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
        result = await start_chat(
            self.app, self.user, body, spec, timing=timing, action=frame.action, target=frame.target
        )
        sub = result.subscription
        if sub is not None and result.actor is not None and self._live(result.conversation_id):
            # A retry without conversationId landed on a conversation this socket already
            # follows: one subscription per conversation, or events would arrive twice.
            await result.actor.unsubscribe(sub)
            sub = None
        self.send_json(
            {
                "type": "ack",
                "of": frame.action,
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
            replay = self._replay(sub) if result.retried else b""  # a retry replays its turn
            self._adopt(result.conversation_id, result.actor, sub, gate, replay)
        elif result.answer is not None and not self._live(result.conversation_id):
            # A retry whose events left the log: init and the stored outcome.
            self.writer.write(b"".join(self.frame(data) for data in rebuilt_events(result)))

    async def close_all(self) -> None:
        for conversation_id in list(self.subs):
            with contextlib.suppress(Exception):
                await self.unsubscribe(conversation_id)


@routes.get("/api/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    """Authenticate, take a stream slot, upgrade, serve. One coroutine from the handshake
    to the end: an idle socket's cost is mostly the frames it keeps waiting (bench scenario
    3), so no helper coroutine stays suspended for the socket's life; each frame the peer
    sends is handled by :func:`_received`."""
    user, protocol = await authenticate(request)
    app = request.app
    refuse_while_draining(app)
    slot = await open_stream(request, user.id)  # 429 before the upgrade, past the caps
    try:
        settings = app[SETTINGS]
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
        app[SOCKETS].add(ws)
        connection.writer.set_user_timeout()
        metrics = app[METRICS]
        metrics.connections.labels("ws").inc()
        # The session's end closes the socket (4001): liveness.watching, spelled out so
        # that no context manager object lives as long as the socket.
        sessions = app[LIVE_SESSIONS]
        sessions.watch(user.session_id, user.session_expires_at, connection)
        try:
            # The frame budget is made on the first data frame (it starts full either way).
            budget: FrameRate | None = None
            async for message in ws:
                if message.type not in _DATA:
                    continue
                if budget is None:
                    budget = FrameRate(settings.ws_frames_per_second, settings.ws_frame_burst)
                if not await _received(ws, connection, budget, message):
                    break
        finally:
            sessions.unwatch(user.session_id, connection)
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
    finally:
        slot.release()


async def _received(
    ws: web.WebSocketResponse, connection: Connection, budget: FrameRate, message: WSMessage
) -> bool:
    """One data frame from the peer; ``False`` once the socket is to be left (closed)."""
    verdict = budget.admit()
    if verdict is not Verdict.ADMIT:
        # Over the frame rate: not processed. One fault a second at most; a flood that
        # goes on is closed like one of bad frames.
        connection.app[METRICS].limit_refusals_by("ws_frames")
        if verdict is Verdict.CLOSE:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many frames")
            return False
        if verdict is Verdict.FAULT and not connection.closing:
            connection.fault(
                "rate_limited",
                f"At most {budget.rate:g} frames per second; frames over the rate are dropped",
                counts=False,
                retry_after=budget.retry_after(),
            )
        return True
    if message.type == WSMsgType.TEXT:
        keep = await connection.handle(message.data)
    else:
        keep = connection.fault("invalid_frame", "Binary frames are not supported")
    if not keep:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many bad frames")
        return False
    # Closed as a slow consumer (4008): nothing more to read.
    return not (connection.closing and connection.closer is None)


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
