"""Following a log over Server-Sent Events, through drops: ``GET
/api/conversations/{id}/events`` and ``GET /api/account/events`` (docs/api.md "Live events",
"Account channel").

:class:`EventStream` is an async iterator of the log's typed events. When the connection
drops or the server ends the stream, it waits (the stream's ``retry:``, doubled per failure
in a row, with jitter; a ``Retry-After`` on a ``429``/``503`` is honoured) and reconnects
with ``Last-Event-ID`` set to the last event's cursor, so the server replays what was
missed: no gap. Whatever a replay repeats is dropped by the cursor (``seq`` at or below
the last one seen): no duplicate. A ``reset`` (the cursor could not be replayed) is yielded
like any event: refetch over REST, then go on.

It stops for good, raising, on what a reconnect cannot cure: ``401``
(:class:`~client.sdk.errors.Unauthorized`: the session ended), ``404``
(:class:`~client.sdk.errors.NotFound`: the conversation was deleted) and other refusals;
and after ``max_attempts`` failed reconnects in a row, when set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from client.sdk.cursors import Backoff, Cursors
from client.sdk.errors import ApiError, ConnectionLost, api_error
from client.sdk.rest import STREAM_TIMEOUT, RestClient
from client.sdk.sse_parser import SSEParser
from client.sdk.wire import ACCOUNT, AccountEvent, ConversationEvent

log = structlog.get_logger(__name__)

E = TypeVar("E", ConversationEvent, AccountEvent)

#: Refusals worth another try after a wait: limits, a draining or unready server, a proxy.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The reconnect wait before the server has said (``retry: 2000`` in Cero's streams).
DEFAULT_RETRY_S = 2.0


class EventStream(Generic[E]):
    """One log followed over SSE, resumed from its cursor on every reconnect.

    ``after``: start after this cursor (a replay of every later event the server holds, or
    ``reset``); ``None`` follows from now. :attr:`cursor` is where a later stream (or a
    WebSocket subscription) should resume from."""

    def __init__(
        self,
        api: RestClient,
        path: str,
        key: str,
        *,
        after: str | None = None,
        max_attempts: int | None = None,
        retry_ceiling: float = 30.0,
    ) -> None:
        self._api = api
        self._path = path
        self._key = key
        self._cursors = Cursors({key: after})
        self._resume_from = after
        self._backoff = Backoff(DEFAULT_RETRY_S, retry_ceiling)
        self._max_attempts = max_attempts
        self._closed = False
        self._response: aiohttp.ClientResponse | None = None
        self._open = asyncio.Event()
        self._failure: BaseException | None = None
        #: Connections made so far (1 + reconnects).
        self.connections = 0

    @property
    def cursor(self) -> str | None:
        """The cursor of the last event yielded (or the starting one)."""
        return self._cursors.text(self._key) or self._resume_from

    @property
    def reconnect_delay(self) -> float:
        """The base wait before a reconnect, in seconds: the stream's ``retry:`` once it
        has sent one (doubled per failure in a row)."""
        return self._backoff.base

    async def wait_open(self, within: float = 30.0) -> None:
        """Wait until a connection is streaming (the server answered ``200``); raises
        what stopped the stream first. Events after this point are not missed."""
        await asyncio.wait_for(self._open.wait(), within)
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Stop following: the iterator ends."""
        self._closed = True
        if self._response is not None:
            self._response.close()

    def __aiter__(self) -> AsyncIterator[E]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[E]:
        try:
            async for event in self._reconnecting():
                yield event
        except Exception as exc:
            self._failure = exc
            raise
        finally:
            self._open.set()  # a waiter sees the end

    async def _reconnecting(self) -> AsyncIterator[E]:
        failures = 0
        while not self._closed:
            delivered = False
            wait: float | None = None
            try:
                async for event in self._connect_once():
                    delivered = True
                    yield event
            except ApiError as exc:
                if exc.status not in RETRYABLE_STATUSES:
                    raise
                wait = exc.retry_after
                log.info("sse_refused", path=self._path, status=exc.status, code=exc.code)
            except ConnectionLost as exc:
                log.info("sse_dropped", path=self._path, reason=str(exc))
            if self._closed:
                return
            if delivered:
                self._backoff.succeeded()
                failures = 0
            failures += 1
            if self._max_attempts is not None and failures > self._max_attempts:
                raise ConnectionLost(f"{self._path}: {failures - 1} reconnects in a row failed")
            await asyncio.sleep(self._backoff.next(at_least=wait))

    async def _connect_once(self) -> AsyncIterator[E]:
        """One connection: its new events, until it ends (normally: :class:`ConnectionLost`
        too, since a live stream only ends by a drop, a revocation or a deletion)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        cursor = self.cursor
        if cursor:
            headers["Last-Event-ID"] = cursor
        parser = SSEParser()
        self.connections += 1
        try:
            async with self._api.session.get(
                self._api.base_url + self._path,
                headers=self._api.headers(headers),
                timeout=STREAM_TIMEOUT,
            ) as resp:
                if resp.status >= 400:
                    raise api_error(resp.status, await resp.read(), resp.headers)
                self._response = resp
                self._open.set()
                async for chunk in resp.content.iter_any():
                    if parser.retry is not None:
                        self._backoff.base = parser.retry / 1000
                    for sse in parser.feed(chunk):
                        event = self._event(sse.data)
                        if event is not None:
                            yield event
                    if self._closed:
                        return
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            if self._closed:
                return
            raise ConnectionLost(f"{self._path}: {exc!r}") from exc
        except TimeoutError as exc:
            raise ConnectionLost(f"{self._path}: silent past the read timeout") from exc
        finally:
            self._response = None
            if parser.retry is not None:
                self._backoff.base = parser.retry / 1000
        if not self._closed:
            raise ConnectionLost(f"{self._path}: the server ended the stream")

    def _event(self, data: str) -> E | None:
        try:
            event: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("sse_not_json", path=self._path)
            return None
        if not isinstance(event, dict) or not self._cursors.admit(event):
            return None  # a duplicate of what a previous connection delivered
        return cast(E, event)


def conversation_events(
    api: RestClient,
    conversation_id: str,
    *,
    after: str | None = None,
    max_attempts: int | None = None,
) -> EventStream[ConversationEvent]:
    """Follow a conversation's log over SSE (``after``: resume after this cursor)."""
    path = f"/api/conversations/{quote(conversation_id, safe='')}/events"
    return EventStream(api, path, conversation_id, after=after, max_attempts=max_attempts)


def account_events(
    api: RestClient, *, after: str | None = None, max_attempts: int | None = None
) -> EventStream[AccountEvent]:
    """Follow the user's account channel over SSE."""
    return EventStream(api, "/api/account/events", ACCOUNT, after=after, max_attempts=max_attempts)
