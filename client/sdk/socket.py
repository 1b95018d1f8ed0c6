"""The WebSocket client (``GET /api/ws``, docs/api.md "WebSocket") on the ``websockets``
library: subscriptions to conversations and to the account channel, the command frames
with their answers, and reconnects that lose nothing.

- **Auth**: the bearer token rides in the subprotocols ``["cero.v1", "bearer.<token>"]``
  (the server answers ``cero.v1``, so the token is never echoed).
- **Commands** (``subscribe``, ``send``, ``regenerate``, ``edit``, ``continue``,
  ``switch``, ``cancel``, ``unsubscribe``, ``ping``) are awaited until their answer: a
  ``subscribed`` or ``ack`` (returned), or a ``fault`` (raised as
  :class:`~client.sdk.errors.ApiError` with its ``code`` and ``retryAfter``). Commands go
  one at a time (the protocol has no request ids), and after a ``rate_limited`` fault the
  next waits its ``retryAfter``, so the server never drops one silently.
- **Events** of every subscription come out of ``async for event in socket``, in order
  per log; a ``reset`` is yielded (refetch over REST), and so is ``unsubscribed`` (the
  conversation was deleted).
- **Reconnect**: when the socket drops (or the server closes it: ``1001`` shutdown,
  ``4008`` slow consumer, ``1006`` gone), it reconnects with backoff (``4008`` at once)
  and subscribes every subscription again with its last cursor: the server replays what
  was missed (no gap), and the cursor gate drops any event already seen (no duplicate).
  Commands waiting for an answer when the socket dropped fail with
  :class:`~client.sdk.errors.ConnectionLost` (a ``send`` with a ``clientMessageId`` may be
  repeated safely: the server never starts it twice).
- **Stops** for good on ``4001`` or a ``401`` handshake
  (:class:`~client.sdk.errors.SessionEnded`: sign in again) and on ``1002``/``1008``/
  ``1009`` (:class:`~client.sdk.errors.ProtocolViolation`): the iterator raises it, and so
  does every command after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from client.sdk.cursors import Backoff, Cursor, Cursors, log_key
from client.sdk.errors import (
    CeroError,
    ConnectionLost,
    ProtocolViolation,
    RateLimited,
    SessionEnded,
    UpgradeRefused,
    api_error,
    fault_error,
)
from client.sdk.rest import USER_AGENT, generation_body
from client.sdk.wire import ACCOUNT, CancelAck, GenerationAck, LiveEvent, Subscribed, SwitchAck

log = structlog.get_logger(__name__)

SESSION_ENDED: Final = 4001
SLOW_CONSUMER: Final = 4008
#: Closes caused by what this side sent: reconnecting would repeat them.
FATAL_CLOSES: Final = frozenset({1002, 1003, 1007, 1008, 1009})
#: A ``done`` carries the whole answer: accept large frames.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Handshake answers that are the server's own refusals, worth a wait and another try.
RETRYABLE_HANDSHAKE: Final = frozenset({429, 503})
_ANSWERS: Final = frozenset({"subscribed", "ack", "fault"})


def ws_url(base_url: str) -> str:
    """``http(s)://host[/prefix]`` → ``ws(s)://host[/prefix]/api/ws``."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + "/api/ws"


@dataclass(slots=True)
class _Pending:
    """A frame sent and not answered yet."""

    kind: str  # the frame's type
    key: str | None  # the log it names (conversation id or "account"), if any
    future: asyncio.Future[dict[str, Any]]
    after: str | None = None  # a subscribe's cursor
    internal: bool = False  # a resubscribe after a reconnect: nobody awaits it


@dataclass(slots=True)
class _End:
    error: BaseException | None = None


@dataclass
class _State:
    subs: set[str] = field(default_factory=set)  # followed logs
    leaving: set[str] = field(default_factory=set)  # unsubscribe sent, ack not yet back
    pending: deque[_Pending] = field(default_factory=deque)


class CeroSocket:
    """One WebSocket to one server, reconnecting until closed or the session ends.

    ``async with CeroSocket(url, token) as ws:`` connects (raising
    :class:`~client.sdk.errors.UpgradeRefused` when the handshake is not upgraded,
    :class:`~client.sdk.errors.Unauthorized` on ``401``); then subscribe and iterate."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        reconnect: bool = True,
        max_attempts: int | None = None,
        request_timeout: float = 30.0,
        open_timeout: float = 10.0,
        retry_base: float = 0.5,
        retry_ceiling: float = 30.0,
    ) -> None:
        self.url = ws_url(base_url)
        self._token = token
        self._reconnect = reconnect
        self._max_attempts = max_attempts
        self._request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._backoff = Backoff(retry_base, retry_ceiling)
        self._cursors = Cursors()
        self._state = _State()
        self._events: asyncio.Queue[LiveEvent | _End] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._fatal: BaseException | None = None
        self._one_at_a_time = asyncio.Lock()
        self._quiet_until = 0.0  # loop time before which no frame is sent (rate_limited)
        #: Connections made so far (1 + reconnects).
        self.connections = 0
        #: The close code of the last connection that ended.
        self.last_close_code: int | None = None

    # -- life --------------------------------------------------------------------------------

    async def __aenter__(self) -> CeroSocket:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the socket (once). Raises what the handshake met: no retry here."""
        if self._runner is not None:
            return
        ws = await self._open()
        self._attach(ws)
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    async def close(self) -> None:
        """Close the socket; the event iterator ends."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._runner), 5)
            if not self._runner.done():
                self._runner.cancel()
        self._events.put_nowait(_End())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscriptions(self) -> frozenset[str]:
        """The logs followed: conversation ids, and ``"account"``."""
        return frozenset(self._state.subs)

    def cursor(self, key: str) -> str | None:
        """The last cursor seen of a log (a conversation id, or ``"account"``)."""
        return self._cursors.text(key)

    def cursors(self) -> dict[str, str]:
        return self._cursors.snapshot()

    async def abort(self) -> None:
        """Drop the connection as a network failure would (no Close frame): the socket
        reconnects. For tests and for a caller that knows the network changed."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # -- events ------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[LiveEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[LiveEvent]:
        while True:
            item = await self._events.get()
            if isinstance(item, _End):
                self._events.put_nowait(item)  # every iterator ends
                if item.error is not None:
                    raise item.error
                return
            yield item

    # -- commands ----------------------------------------------------------------------------

    async def subscribe(self, conversation_id: str, *, after: str | None = None) -> Subscribed:
        """Follow a conversation: from now, or replaying every event after ``after``."""
        return await self._subscribe(conversation_id, {"conversationId": conversation_id}, after)

    async def subscribe_account(self, *, after: str | None = None) -> Subscribed:
        """Follow the user's account channel."""
        return await self._subscribe(ACCOUNT, {"channel": ACCOUNT}, after)

    async def _subscribe(self, key: str, target: dict[str, str], after: str | None) -> Subscribed:
        self._start_from(key, after)
        self._state.subs.add(key)
        self._state.leaving.discard(key)
        frame: dict[str, Any] = {"type": "subscribe", **target}
        if after is not None:
            frame["after"] = after
        try:
            answer = await self._command(frame, "subscribe", key, after=after)
        except BaseException:
            self._state.subs.discard(key)
            raise
        return cast(Subscribed, answer)

    async def unsubscribe(self, conversation_id: str) -> bool:
        return await self._unsubscribe(conversation_id, {"conversationId": conversation_id})

    async def unsubscribe_account(self) -> bool:
        return await self._unsubscribe(ACCOUNT, {"channel": ACCOUNT})

    async def _unsubscribe(self, key: str, target: dict[str, str]) -> bool:
        self._state.subs.discard(key)
        self._state.leaving.add(key)
        answer = await self._command({"type": "unsubscribe", **target}, "unsubscribe", key)
        self._cursors.forget(key)
        return bool(answer.get("unsubscribed"))

    async def send(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> GenerationAck:
        """Send a message; the socket follows its conversation from then on. The events
        come out of the iterator (possibly before this returns)."""
        body = generation_body(
            message=message,
            conversation_id=conversation_id,
            ai_model=ai_model,
            tools=tools,
            client_message_id=client_message_id,
        )
        return await self._generation("send", conversation_id, body)

    async def regenerate(
        self,
        conversation_id: str,
        message_id: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> GenerationAck:
        body = generation_body(ai_model=ai_model, tools=tools, client_message_id=client_message_id)
        body.update(conversationId=conversation_id, messageId=message_id)
        return await self._generation("regenerate", conversation_id, body)

    async def edit(
        self,
        conversation_id: str,
        message_id: str,
        message: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> GenerationAck:
        body = generation_body(
            message=message, ai_model=ai_model, tools=tools, client_message_id=client_message_id
        )
        body.update(conversationId=conversation_id, messageId=message_id)
        return await self._generation("edit", conversation_id, body)

    async def continue_(
        self,
        conversation_id: str,
        message_id: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> GenerationAck:
        body = generation_body(ai_model=ai_model, tools=tools, client_message_id=client_message_id)
        body.update(conversationId=conversation_id, messageId=message_id)
        return await self._generation("continue", conversation_id, body)

    async def _generation(
        self, kind: str, conversation_id: str | None, body: dict[str, Any]
    ) -> GenerationAck:
        answer = await self._command({"type": kind, **body}, kind, conversation_id)
        ack = cast(GenerationAck, answer)
        # The server subscribed this socket to the conversation: follow it through reconnects.
        self._state.subs.add(ack["conversationId"])
        self._state.leaving.discard(ack["conversationId"])
        return ack

    async def switch(self, conversation_id: str, message_id: str) -> SwitchAck:
        frame = {"type": "switch", "conversationId": conversation_id, "messageId": message_id}
        return cast(SwitchAck, await self._command(frame, "switch", conversation_id))

    async def cancel(self, conversation_id: str, generation_id: str | None = None) -> bool:
        """``True`` only when this stopped a running generation."""
        frame: dict[str, Any] = {"type": "cancel", "conversationId": conversation_id}
        if generation_id is not None:
            frame["generationId"] = generation_id
        answer = cast(CancelAck, await self._command(frame, "cancel", conversation_id))
        return answer["cancelled"]

    async def ping(self) -> None:
        """A ``ping`` frame, answered by ``ack``: the server is there and reading."""
        await self._command({"type": "ping"}, "ping", None)

    # -- plumbing ----------------------------------------------------------------------------

    def _start_from(self, key: str, after: str | None) -> None:
        cursor = Cursor.parse(after) if after else None
        if cursor is None:
            self._cursors.forget(key)
        else:
            self._cursors.set(key, cursor)

    async def _ready(self) -> ClientConnection:
        """The open connection, waiting through a reconnect (up to the request timeout)."""
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ConnectionLost("the socket is closed")
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), self._request_timeout)
            except TimeoutError:
                raise ConnectionLost("the socket is reconnecting; try again") from None
        if self._fatal is not None:
            raise self._fatal
        ws = self._ws
        if ws is None:
            raise ConnectionLost("the socket is closed")
        return ws

    async def _command(
        self, frame: Mapping[str, Any], kind: str, key: str | None, *, after: str | None = None
    ) -> dict[str, Any]:
        """Send one frame and await its answer. One command at a time: the protocol has no
        request ids, and a frame the server drops (over the frame rate) gets no answer, so
        with frames pipelined an answer could not always be told apart from another's.
        After a ``rate_limited`` fault the next frame waits its ``retryAfter``, so no frame
        of this socket is ever dropped silently."""
        async with self._one_at_a_time:
            wait = self._quiet_until - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._exchange(frame, kind, key, after)
            except RateLimited as exc:
                pause = exc.retry_after if exc.retry_after is not None else 1.0
                self._quiet_until = asyncio.get_running_loop().time() + pause
                raise

    async def _exchange(
        self, frame: Mapping[str, Any], kind: str, key: str | None, after: str | None
    ) -> dict[str, Any]:
        ws = await self._ready()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = _Pending(kind, key, future, after=after)
        self._state.pending.append(entry)
        try:
            await ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            # Never sent: it must not take the place of a frame sent on the next socket.
            with contextlib.suppress(ValueError):
                self._state.pending.remove(entry)
            raise ConnectionLost(f"{kind}: the socket dropped") from None
        try:
            return await asyncio.wait_for(future, self._request_timeout)
        except TimeoutError:
            raise ConnectionLost(f"{kind}: no answer within {self._request_timeout:g} s") from None

    async def _open(self) -> ClientConnection:
        protocols = [Subprotocol("cero.v1"), Subprotocol(f"bearer.{self._token}")]
        try:
            ws = await connect(
                self.url,
                subprotocols=protocols,
                user_agent_header=USER_AGENT,
                open_timeout=self._open_timeout,
                max_size=MAX_FRAME,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            response = exc.response
            status = response.status_code
            if status == 401:
                raise SessionEnded("the server refused the token (401): sign in again") from exc
            if status in RETRYABLE_HANDSHAKE and b'"code"' in (response.body or b""):
                headers = {name: value for name, value in response.headers.raw_items()}
                raise api_error(status, bytes(response.body or b""), headers) from exc
            raise UpgradeRefused(status, f"the handshake got HTTP {status}") from exc
        except InvalidHandshake as exc:
            raise UpgradeRefused(None, f"{type(exc).__name__}: {exc}") from exc
        except (OSError, TimeoutError, EOFError) as exc:
            raise ConnectionLost(f"cannot open {self.url}: {exc!r}") from exc
        self.connections += 1
        return ws

    def _attach(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._connected.set()

    async def _run(self, ws: ClientConnection) -> None:
        """Read the socket; reconnect and resubscribe when it drops; end on a fatal close."""
        error: BaseException | None = None
        try:
            while True:
                received = await self._read(ws)
                code = ws.close_code
                self.last_close_code = code
                self._connected.clear()
                self._ws = None
                self._fail_pending(ConnectionLost(f"the socket closed ({code})"))
                if self._closing:
                    return
                if code == SESSION_ENDED:
                    raise SessionEnded("the session ended (4001): sign in again")
                if code in FATAL_CLOSES:
                    raise ProtocolViolation(f"the server closed the socket with {code}")
                if not self._reconnect:
                    raise ConnectionLost(f"the socket closed ({code})")
                if received:
                    self._backoff.succeeded()
                log.info("ws_reconnecting", close_code=code)
                reopened = await self._reopen(at_once=code == SLOW_CONSUMER)
                if reopened is None:
                    return
                ws = reopened
        except CeroError as exc:
            error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the iterator hanging
            log.exception("ws_runner_failed")
            error = ConnectionLost(f"the socket's reader failed: {exc!r}")
        finally:
            self._fatal = error
            self._connected.set()  # wake commands waiting for a reconnect: they see the end
            self._fail_pending(error or ConnectionLost("the socket is closed"))
            self._events.put_nowait(_End(error))

    async def _reopen(self, *, at_once: bool) -> ClientConnection | None:
        attempts = 0
        while not self._closing:
            if not at_once or attempts:
                await asyncio.sleep(self._backoff.next())
            attempts += 1
            try:
                ws = await self._open()
            except SessionEnded:
                raise
            except CeroError as exc:
                log.info("ws_reconnect_failed", attempt=attempts, reason=str(exc))
                if self._max_attempts is not None and attempts >= self._max_attempts:
                    raise ConnectionLost(f"{attempts} reconnects in a row failed") from exc
                wait = getattr(exc, "retry_after", None)
                if isinstance(wait, float):
                    await asyncio.sleep(wait)
                continue
            if self._closing:
                await ws.close()
                return None
            try:
                await self._resubscribe(ws)
            except ConnectionClosed:
                self._fail_pending(ConnectionLost("the socket dropped while resubscribing"))
                continue
            self._attach(ws)
            return ws
        return None

    async def _resubscribe(self, ws: ClientConnection) -> None:
        """Subscribe every followed log again from its cursor, before any other frame."""
        loop = asyncio.get_running_loop()
        for key in sorted(self._state.subs):
            after = self._cursors.text(key)
            target = {"channel": ACCOUNT} if key == ACCOUNT else {"conversationId": key}
            frame: dict[str, Any] = {"type": "subscribe", **target}
            if after is not None:
                frame["after"] = after
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._state.pending.append(
                _Pending("subscribe", key, future, after=after, internal=True)
            )
            await ws.send(orjson.dumps(frame).decode())

    async def _read(self, ws: ClientConnection) -> bool:
        """Read frames until the socket ends; whether any arrived."""
        received = False
        try:
            async for raw in ws:
                received = True
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("ws_not_json")
                    continue
                if isinstance(frame, dict):
                    self._dispatch(frame)
        except ConnectionClosed:
            pass
        return received

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in _ANSWERS:
            self._answer(frame)
            return
        key = log_key(frame)
        if kind == "unsubscribed":
            if key is not None:
                self._state.subs.discard(key)
                self._cursors.forget(key)
            self._events.put_nowait(cast(LiveEvent, frame))
            return
        if key is None:
            log.debug("ws_unknown_frame", type=kind)
            return
        if key in self._state.leaving:
            return  # in flight when we unsubscribed
        self._state.subs.add(key)  # a send subscribed the socket to it
        if self._cursors.admit(frame):
            self._events.put_nowait(cast(LiveEvent, frame))

    def _answer(self, frame: dict[str, Any]) -> None:
        pending = self._state.pending
        kind = frame["type"]
        index = 0 if kind == "fault" else self._match(frame)
        if index is None or not pending:
            log.info("ws_unmatched_answer", type=kind, of=frame.get("of"), code=frame.get("code"))
            return
        for _ in range(index):  # frames the server dropped (over the frame rate)
            skipped = pending.popleft()
            self._settle(skipped, error=ConnectionLost(f"{skipped.kind}: dropped by the server"))
        entry = pending.popleft()
        if kind == "fault":
            if entry.internal and entry.key is not None:
                # A resubscribe refused (the conversation is gone): the caller hears of it.
                self._state.subs.discard(entry.key)
                self._cursors.forget(entry.key)
                gone: dict[str, Any] = {"type": "unsubscribed", "reason": str(frame.get("code"))}
                gone.update(
                    {"channel": ACCOUNT} if entry.key == ACCOUNT else {"conversationId": entry.key}
                )
                self._events.put_nowait(cast(LiveEvent, gone))
            self._settle(entry, error=fault_error(frame))
            return
        if kind == "subscribed" and entry.key is not None and entry.after is None:
            # Followed from now: live events come after the log's last event.
            epoch, seq = frame.get("epoch"), frame.get("seq")
            if isinstance(epoch, str) and isinstance(seq, int):
                self._cursors.set(entry.key, Cursor(epoch, seq))
        if kind == "ack" and entry.kind == "unsubscribe" and entry.key is not None:
            self._state.leaving.discard(entry.key)
        self._settle(entry, result=frame)

    def _match(self, frame: dict[str, Any]) -> int | None:
        """The index of the pending frame ``frame`` answers."""
        kind = "subscribe" if frame["type"] == "subscribed" else str(frame.get("of"))
        key = log_key(frame)
        for index, entry in enumerate(self._state.pending):
            if entry.kind != kind:
                continue
            if entry.key is None or key is None or entry.key == key:
                return index
        return None

    @staticmethod
    def _settle(
        entry: _Pending,
        *,
        result: dict[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        if entry.future.done() or entry.internal:
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result or {})

    def _fail_pending(self, error: BaseException) -> None:
        while self._state.pending:
            self._settle(self._state.pending.popleft(), error=error)
