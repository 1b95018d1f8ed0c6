"""The interactive mode's one connection to the server (:mod:`client.repl`), on the client
library (:mod:`client.sdk`).

:func:`open_link` opens a WebSocket (:class:`SocketLink`): one socket for the session's
sends (``send`` frames with a ``clientMessageId``, so a resend after a reconnect is
idempotent), its cancels, and the live events of its conversation from every device plus
the account channel; it reconnects and resubscribes from the last cursors by itself.
Where a proxy refuses the upgrade it falls back to HTTP (:class:`HttpLink`): sends as
``POST /api/chat`` (an SSE answer), cancels as ``POST …/cancel``, live events over
``GET /api/conversations/{id}/events`` and ``GET /api/account/events``, merged into one
stream and deduplicated by cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import structlog

from client.sdk import (
    CeroClient,
    CeroError,
    CeroSocket,
    ConnectionLost,
    EventStream,
    NotFound,
    SessionEnded,
    Unauthorized,
    UpgradeRefused,
)
from client.sdk.cursors import Cursors
from client.sdk.wire import ACCOUNT

log = structlog.get_logger("cero.repl")

#: A send whose connection dropped before it was answered is repeated (same
#: ``clientMessageId``: the server never starts it twice) this many times.
SEND_ATTEMPTS = 3


class Link(Protocol):
    transport: Literal["websocket", "sse"]
    #: Whether a send holds a viewer of its own while its answer streams (a POST's answer).
    posts_are_viewers: bool

    async def follow(self, conversation: str, *, after: str | None = None) -> None:
        """Receive the conversation's live events from now (replaying what the session
        missed of it, when it followed it before, or after ``after``)."""

    async def forget(self, conversation: str) -> None: ...

    async def send(self, body: dict[str, Any]) -> tuple[str, str | None]:
        """Send a line: its conversation id, and its generation id when already known."""

    async def cancel(self, conversation: str, generation: str) -> bool: ...

    def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the followed logs; raises what ends the session."""

    async def close(self) -> None: ...


def _send_args(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/chat``'s body as :meth:`CeroSocket.send`'s keywords."""
    return {
        "conversation_id": body.get("conversationId"),
        "ai_model": body.get("aiModel"),
        "tools": body.get("tools"),
        "client_message_id": body.get("clientMessageId"),
    }


class SocketLink:
    """Everything over one :class:`~client.sdk.CeroSocket`."""

    transport: Literal["websocket", "sse"] = "websocket"
    posts_are_viewers = False

    def __init__(self, socket: CeroSocket) -> None:
        self.socket = socket

    async def follow(self, conversation: str, *, after: str | None = None) -> None:
        if conversation not in self.socket.subscriptions:
            after = after or self.socket.cursor(conversation)
            await self.socket.subscribe(conversation, after=after)

    async def forget(self, conversation: str) -> None:
        if conversation in self.socket.subscriptions:
            with contextlib.suppress(CeroError):
                await self.socket.unsubscribe(conversation)

    async def send(self, body: dict[str, Any]) -> tuple[str, str | None]:
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                ack = await self.socket.send(str(body["message"]), **_send_args(body))
            except ConnectionLost:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.info("repl_send_again", attempt=attempt)
                await asyncio.sleep(0.5 * attempt)
                continue
            return ack["conversationId"], ack["generationId"]
        raise AssertionError("unreachable")

    async def cancel(self, conversation: str, generation: str) -> bool:
        return await self.socket.cancel(conversation, generation)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        async for event in self.socket:
            yield cast(dict[str, Any], event)

    async def close(self) -> None:
        await self.socket.close()


@dataclass(slots=True)
class _End:
    error: BaseException | None


class HttpLink:
    """The same over plain HTTP: a POST per send, an SSE stream per followed log."""

    transport: Literal["websocket", "sse"] = "sse"
    #: An open ``POST /api/chat`` answer is one of the conversation's viewers.
    posts_are_viewers = True

    def __init__(self, cero: CeroClient, *, refused: UpgradeRefused | None = None) -> None:
        self._cero = cero
        #: Why the WebSocket was not used.
        self.refused = refused
        self._queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()
        self._gate = Cursors()  # one gate for a log's events from its stream and the POSTs
        self._streams: dict[str, EventStream[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._open(ACCOUNT, self._cero.account_events())

    async def _open(self, key: str, stream: EventStream[Any]) -> None:
        self._streams[key] = stream
        self._spawn(self._pump(key, stream))
        await stream.wait_open()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _put(self, event: dict[str, Any]) -> None:
        if self._gate.admit(event):
            self._queue.put_nowait(event)

    async def _pump(self, key: str, stream: EventStream[Any]) -> None:
        try:
            async for event in stream:
                self._put(event)
        except asyncio.CancelledError:
            raise
        except NotFound:  # the conversation was deleted
            self._streams.pop(key, None)
            self._queue.put_nowait(
                {"type": "unsubscribed", "conversationId": key, "reason": "not_found"}
            )
        except Unauthorized:
            self._queue.put_nowait(_End(SessionEnded("the server refused the token (401)")))
        except BaseException as exc:
            self._queue.put_nowait(_End(exc))

    async def follow(self, conversation: str, *, after: str | None = None) -> None:
        if conversation in self._streams:
            return
        after = self._gate.text(conversation) or after
        await self._open(conversation, self._cero.conversation_events(conversation, after=after))

    async def forget(self, conversation: str) -> None:
        stream = self._streams.pop(conversation, None)
        if stream is not None:
            await stream.close()

    async def send(self, body: dict[str, Any]) -> tuple[str, str | None]:
        first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._spawn(self._post(body, first))
        return await first, None

    async def _post(self, body: dict[str, Any], first: asyncio.Future[str]) -> None:
        """``POST /api/chat``; its events join the others. A drop before the first event
        posts it again (same ``clientMessageId``); after it, the conversation's own stream
        (followed from the last cursor) brings the rest."""
        conversation: str | None = None
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    async for event in self._cero.stream_generation("/api/chat", body):
                        data = cast(dict[str, Any], event)
                        if conversation is None:
                            conversation = str(data.get("conversationId"))
                            first.set_result(conversation)
                        self._put(data)
                    return
                except ConnectionLost:
                    if conversation is not None:
                        return
                    if attempt >= SEND_ATTEMPTS:
                        raise
                    log.info("repl_post_again", attempt=attempt)
                    await asyncio.sleep(0.5 * attempt)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not first.done():
                first.set_exception(exc)

    async def cancel(self, conversation: str, generation: str) -> bool:
        return await self._cero.cancel(conversation, generation)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._queue.put_nowait(_End(None))


async def open_link(cero: CeroClient) -> Link:
    """The WebSocket, subscribed to the account channel; or, when its upgrade is refused,
    the HTTP link (its :attr:`HttpLink.refused` says how)."""
    socket = cero.socket()
    try:
        await socket.connect()
    except UpgradeRefused as exc:
        log.info("repl_ws_refused", status=exc.status)
        link = HttpLink(cero, refused=exc)
        try:
            await link.start()
        except BaseException:
            await link.close()
            raise
        return link
    try:
        await socket.subscribe_account()
    except BaseException:
        await socket.close()
        raise
    return SocketLink(socket)
