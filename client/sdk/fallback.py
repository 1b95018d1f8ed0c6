"""Follow live events over the WebSocket, or over Server-Sent Events where the WebSocket
cannot pass.

Some proxies refuse the upgrade (they answer ``400``/``403``/``405``, or close the
connection) yet pass plain HTTP, streamed responses included. :func:`follow` tries the
WebSocket first (:class:`~client.sdk.socket.CeroSocket`); when its handshake is refused
(:class:`~client.sdk.errors.UpgradeRefused`) it follows the same logs with one SSE stream
each (:class:`~client.sdk.events.EventStream`), merged into one iterator. Both ways resume
from cursors and reconnect; :attr:`LiveFeed.transport` says which one is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import structlog

from client.sdk.errors import UpgradeRefused
from client.sdk.events import EventStream, account_events, conversation_events
from client.sdk.rest import RestClient
from client.sdk.socket import CeroSocket
from client.sdk.wire import ACCOUNT, LiveEvent

log = structlog.get_logger(__name__)

Transport = Literal["websocket", "sse"]


@dataclass(slots=True)
class _Ended:
    error: BaseException | None


class LiveFeed:
    """Live events of some conversations and/or the account channel, in order per log.

    Iterate it (``async for event in feed``); :meth:`close` it when done (or use it as an
    async context manager). A stream that stops for good (session ended, a conversation
    deleted over SSE) raises from the iterator."""

    def __init__(self, transport: Transport) -> None:
        self.transport: Transport = transport
        self.socket: CeroSocket | None = None
        self.streams: dict[str, EventStream[Any]] = {}
        self._queue: asyncio.Queue[LiveEvent | _Ended] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> LiveFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def cursors(self) -> dict[str, str]:
        """The last cursor seen per log: where a later feed resumes from."""
        if self.socket is not None:
            return self.socket.cursors()
        return {key: stream.cursor for key, stream in self.streams.items() if stream.cursor}

    def __aiter__(self) -> AsyncIterator[LiveEvent]:
        if self.socket is not None:
            return aiter(self.socket)
        return self._merged()

    async def _merged(self) -> AsyncIterator[LiveEvent]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Ended):
                self._queue.put_nowait(item)
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _pump(self, stream: EventStream[Any]) -> None:
        async def run() -> None:
            try:
                async for event in stream:
                    self._queue.put_nowait(cast(LiveEvent, event))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._queue.put_nowait(_Ended(exc))

        self._tasks.append(asyncio.get_running_loop().create_task(run()))

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        for stream in self.streams.values():
            await stream.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._queue.put_nowait(_Ended(None))


async def follow(
    api: RestClient,
    conversations: Iterable[str] = (),
    *,
    account: bool = False,
    after: Mapping[str, str] | None = None,
    prefer: Transport = "websocket",
) -> LiveFeed:
    """Follow ``conversations`` (ids) and, with ``account``, the account channel.

    ``after`` maps a log (a conversation id, or ``"account"``) to the cursor to resume it
    from. The WebSocket is tried first (unless ``prefer="sse"``); a refused upgrade falls
    back to SSE. Other failures (``401``, the server unreachable) are raised."""
    if not api.token:
        raise ValueError("follow() needs a bearer token")
    keys = list(dict.fromkeys(conversations))
    starts = dict(after or {})
    if prefer == "websocket":
        socket = CeroSocket(api.base_url, api.token)
        try:
            await socket.connect()
        except UpgradeRefused as exc:
            log.info("ws_refused_falling_back_to_sse", status=exc.status)
        else:
            feed = LiveFeed("websocket")
            feed.socket = socket
            try:
                for key in keys:
                    await socket.subscribe(key, after=starts.get(key))
                if account:
                    await socket.subscribe_account(after=starts.get(ACCOUNT))
            except BaseException:
                await socket.close()
                raise
            return feed
    feed = LiveFeed("sse")
    for key in keys:
        feed.streams[key] = conversation_events(api, key, after=starts.get(key))
    if account:
        feed.streams[ACCOUNT] = account_events(api, after=starts.get(ACCOUNT))
    for stream in feed.streams.values():
        feed._pump(stream)
    try:  # streaming before this returns: nothing published after it is missed
        await asyncio.gather(*(stream.wait_open() for stream in feed.streams.values()))
    except BaseException:
        await feed.close()
        raise
    return feed
