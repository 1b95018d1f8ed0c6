"""Typed REST over aiohttp: every JSON endpoint a client needs, the chat stream, export and
import (docs/api.md).

Each method answers the server's JSON as the ``TypedDict`` of :mod:`client.sdk.wire`, or
raises :class:`~client.sdk.errors.ApiError` (its subclass by status) carrying the
contract's ``code``, ``error``, ``retryAfter`` and ``field``; a connection that fails or
drops raises :class:`~client.sdk.errors.ConnectionLost`. Listings that page with
``nextCursor`` are async iterators that fetch the next page when the caller gets there.

Generations (``chat``, ``regenerate``, ``edit``, ``continue_``) stream Server-Sent Events
(``Accept: text/event-stream``) and yield the typed events of the conversation's log, from
the send's user ``message`` event to the generation's terminal event.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import quote

import aiohttp
import orjson

from client import __version__
from client.sdk.errors import ApiError, ConnectionLost, api_error
from client.sdk.sse_parser import SSEParser
from client.sdk.wire import (
    Conversation,
    ConversationEvent,
    ConversationMessages,
    ConversationPage,
    ImportedConversation,
    ModelCatalog,
    SearchPage,
    SearchResult,
    Switched,
    User,
)

USER_AGENT = f"cero-sdk/{__version__}"
#: A whole JSON answer within this.
REST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
#: Streams: no total; the server pings every 15 s, so 45 s of silence is a dead connection.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=45)
#: Export: large accounts take a while; the server writes as it reads.
EXPORT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)

ExportFormat = Literal["json", "markdown"]
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def _path(segment: str) -> str:
    """An id as one path segment (ids are opaque: never trust them to be URL-safe)."""
    return quote(segment, safe="")


def generation_body(
    *,
    message: str | None = None,
    conversation_id: str | None = None,
    ai_model: str | None = None,
    tools: Sequence[str] | None = None,
    client_message_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a send (``POST /api/chat``, a WebSocket ``send``) and of
    regenerate, edit and continue: only the keys given."""
    body: dict[str, Any] = {}
    if message is not None:
        body["message"] = message
    if conversation_id is not None:
        body["conversationId"] = conversation_id
    if ai_model is not None:
        body["aiModel"] = ai_model
    if tools is not None:
        body["tools"] = list(tools)
    if client_message_id is not None:
        body["clientMessageId"] = client_message_id
    return body


class RestClient:
    """Calls to one Cero API server with one bearer token.

    Use as ``async with RestClient(url, token) as api:``; pass ``session`` to share an
    aiohttp session of your own (it is then left open)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> RestClient:
        self.session  # noqa: B018 - opens it inside the running loop
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT}, timeout=REST_TIMEOUT
            )
        return self._session

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The bearer token (when there is one) and ``extra``."""
        out = dict(extra or {})
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    # -- plumbing ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One call answered by JSON: the parsed body on 2xx, else :class:`ApiError`."""
        headers = self.headers({"Content-Type": "application/json"} if data is not None else None)
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                json=json,
                data=data,
                params=params,
                headers=headers,
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise api_error(resp.status, body, resp.headers)
        except _CONNECTION_ERRORS as exc:
            raise ConnectionLost(f"{method} {path}: {exc!r}") from exc
        except TimeoutError as exc:
            raise ConnectionLost(f"{method} {path}: timed out") from exc
        try:
            return orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            raise ApiError(resp.status, "not_json", f"{path} answered something not JSON") from exc

    # -- user and models -------------------------------------------------------------------

    async def whoami(self) -> User:
        data = await self.request("GET", "/api/user/whoami")
        return cast(User, data["user"])

    async def models(self) -> ModelCatalog:
        return cast(ModelCatalog, await self.request("GET", "/api/models"))

    async def instructions(self) -> str | None:
        """The user's instructions (``None``: none set)."""
        data = await self.request("GET", "/api/user/instructions")
        return cast(str | None, data["instructions"])

    async def set_instructions(self, text: str | None) -> str | None:
        """Replace the user's instructions (``None`` or blank clears them); what is stored."""
        data = await self.request("PUT", "/api/user/instructions", json={"instructions": text})
        return cast(str | None, data["instructions"])

    # -- conversations ---------------------------------------------------------------------

    async def conversations_page(
        self, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        params = {"limit": str(limit)}
        if cursor is not None:
            params["cursor"] = cursor
        return cast(
            ConversationPage, await self.request("GET", "/api/conversations", params=params)
        )

    async def conversations(self, *, page_size: int = 20) -> AsyncIterator[Conversation]:
        """Every conversation, newest ``updatedAt`` first, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.conversations_page(limit=page_size, cursor=cursor)
            for conversation in page["conversations"]:
                yield conversation
            cursor = page["nextCursor"]
            if cursor is None:
                return

    async def messages(self, conversation_id: str) -> ConversationMessages:
        """The active path, oldest first."""
        path = f"/api/conversations/{_path(conversation_id)}/messages"
        return cast(ConversationMessages, await self.request("GET", path))

    async def tree(self, conversation_id: str) -> ConversationMessages:
        """Every message of every branch."""
        path = f"/api/conversations/{_path(conversation_id)}/tree"
        return cast(ConversationMessages, await self.request("GET", path))

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        short_title: str | None = None,
        instructions: str | Literal[False] | None = False,
    ) -> Conversation:
        """``PATCH``: a new title and/or the conversation's instructions (``None`` clears
        them; leave ``instructions`` out to keep them)."""
        body: dict[str, Any] = {}
        if short_title is not None:
            body["shortTitle"] = short_title
        if instructions is not False:
            body["instructions"] = instructions
        path = f"/api/conversations/{_path(conversation_id)}"
        data = await self.request("PATCH", path, json=body)
        return cast(Conversation, data["conversation"])

    async def rename(self, conversation_id: str, short_title: str) -> Conversation:
        return await self.update_conversation(conversation_id, short_title=short_title)

    async def delete(self, conversation_id: str) -> bool:
        data = await self.request("DELETE", f"/api/conversations/{_path(conversation_id)}")
        return bool(data["deleted"])

    async def cancel(self, conversation_id: str, generation_id: str | None = None) -> bool:
        """``True`` only when this call stopped a running generation."""
        body = {"generationId": generation_id} if generation_id else {}
        path = f"/api/conversations/{_path(conversation_id)}/cancel"
        data = await self.request("POST", path, json=body)
        return bool(data["cancelled"])

    async def switch(self, conversation_id: str, message_id: str) -> Switched:
        path = f"/api/conversations/{_path(conversation_id)}/messages/{_path(message_id)}/switch"
        return cast(Switched, await self.request("POST", path, json={}))

    # -- search ----------------------------------------------------------------------------

    async def search_page(
        self, q: str, *, limit: int = 20, cursor: str | None = None
    ) -> SearchPage:
        params = {"q": q, "limit": str(limit)}
        if cursor is not None:
            params["cursor"] = cursor
        return cast(SearchPage, await self.request("GET", "/api/search", params=params))

    async def search(self, q: str, *, page_size: int = 20) -> AsyncIterator[SearchResult]:
        """Every result for ``q`` (plain words, all of them), best first."""
        cursor: str | None = None
        while True:
            page = await self.search_page(q, limit=page_size, cursor=cursor)
            for result in page["results"]:
                yield result
            cursor = page["nextCursor"]
            if cursor is None:
                return

    # -- export and import -----------------------------------------------------------------

    async def export(
        self,
        destination: str | os.PathLike[str],
        *,
        conversation_id: str | None = None,
        format: ExportFormat = "json",
    ) -> Path:
        """Stream one conversation's export (or the whole account's) into ``destination``.

        Written to a temporary file beside it and renamed at the end: a connection cut
        before the chunked terminator (the server's way of saying the export failed) raises
        :class:`ConnectionLost` and leaves no file."""
        path = (
            f"/api/conversations/{_path(conversation_id)}/export"
            if conversation_id is not None
            else "/api/export"
        )
        target = Path(destination)
        fd, partial = tempfile.mkstemp(prefix=".cero-export-", dir=target.parent or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    async with self.session.get(
                        self.base_url + path,
                        params={"format": format},
                        headers=self.headers(),
                        timeout=EXPORT_TIMEOUT,
                    ) as resp:
                        if resp.status >= 400:
                            raise api_error(resp.status, await resp.read(), resp.headers)
                        async for chunk in resp.content.iter_any():
                            out.write(chunk)
                except _CONNECTION_ERRORS as exc:
                    raise ConnectionLost(f"the export was cut short: {exc!r}") from exc
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        return target

    async def import_file(
        self, source: str | os.PathLike[str] | bytes
    ) -> list[ImportedConversation]:
        """``POST /api/import`` of an export file (a path, or its bytes): the new
        conversations, in the file's order. All or nothing (``400 invalid_import``)."""
        # A local file the caller named, read whole: the server takes the body whole too.
        body = source if isinstance(source, bytes) else Path(source).read_bytes()  # noqa: ASYNC240
        data = await self.request("POST", "/api/import", data=body)
        return cast(list[ImportedConversation], data["conversations"])

    # -- generations -----------------------------------------------------------------------

    def chat(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> AsyncIterator[ConversationEvent]:
        """Send ``message`` and stream the generation's events (``message``, ``init``,
        ``token``…, then ``done``, ``error`` or ``cancelled``). Closing the iterator early
        does not stop the generation: :meth:`cancel` does."""
        body = generation_body(
            message=message,
            conversation_id=conversation_id,
            ai_model=ai_model,
            tools=tools,
            client_message_id=client_message_id,
        )
        return self.stream_generation("/api/chat", body)

    def regenerate(
        self,
        conversation_id: str,
        message_id: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> AsyncIterator[ConversationEvent]:
        body = generation_body(ai_model=ai_model, tools=tools, client_message_id=client_message_id)
        return self.stream_generation(
            self._branch_path(conversation_id, message_id, "regenerate"), body
        )

    def edit(
        self,
        conversation_id: str,
        message_id: str,
        message: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> AsyncIterator[ConversationEvent]:
        body = generation_body(
            message=message, ai_model=ai_model, tools=tools, client_message_id=client_message_id
        )
        return self.stream_generation(self._branch_path(conversation_id, message_id, "edit"), body)

    def continue_(
        self,
        conversation_id: str,
        message_id: str,
        *,
        ai_model: str | None = None,
        tools: Sequence[str] | None = None,
        client_message_id: str | None = None,
    ) -> AsyncIterator[ConversationEvent]:
        body = generation_body(ai_model=ai_model, tools=tools, client_message_id=client_message_id)
        return self.stream_generation(
            self._branch_path(conversation_id, message_id, "continue"), body
        )

    @staticmethod
    def _branch_path(conversation_id: str, message_id: str, action: str) -> str:
        return f"/api/conversations/{_path(conversation_id)}/messages/{_path(message_id)}/{action}"

    async def stream_generation(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncIterator[ConversationEvent]:
        """``POST path`` with ``Accept: text/event-stream``: the typed events until the
        stream ends (after the generation's terminal event)."""
        headers = self.headers({"Accept": "text/event-stream", "Cache-Control": "no-cache"})
        parser = SSEParser()
        try:
            async with self.session.post(
                self.base_url + path, json=dict(body), headers=headers, timeout=STREAM_TIMEOUT
            ) as resp:
                if resp.status >= 400:
                    raise api_error(resp.status, await resp.read(), resp.headers)
                async for chunk in resp.content.iter_any():
                    for sse in parser.feed(chunk):
                        yield cast(ConversationEvent, orjson.loads(sse.data))
                for sse in parser.close():
                    yield cast(ConversationEvent, orjson.loads(sse.data))
        except _CONNECTION_ERRORS as exc:
            raise ConnectionLost(f"POST {path}: the stream dropped: {exc!r}") from exc
        except TimeoutError as exc:
            raise ConnectionLost(f"POST {path}: no data within the read timeout") from exc
