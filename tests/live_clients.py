"""Real protocol clients for tests: NDJSON and SSE readers over aiohttp, a WebSocket peer.

Parsers here are deliberately independent of the server's renderers, so a framing bug on
either side shows up as a failing test rather than cancelling out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

# What ClientSession.post returns: awaitable, and an async context manager.
from aiohttp.client import _RequestContextManager


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: dict[str, Any]


async def read_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Parse an SSE body per the WHATWG rules (ignoring comments and retry)."""
    fields: dict[str, str] = {}
    data_lines: list[str] = []
    async for raw in resp.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data_lines:
                yield SseEvent(
                    fields.get("id"),
                    fields.get("event", "message"),
                    orjson.loads("\n".join(data_lines)),
                )
            fields, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
        elif name in ("id", "event"):
            fields[name] = value


async def read_ndjson(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    out = []
    async for raw in resp.content:
        line = raw.strip()
        if line:
            out.append(orjson.loads(line))
    return out


def post_chat(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    headers: Mapping[str, str] | None = None,
    **body: Any,
) -> _RequestContextManager:
    """``POST /api/chat`` with ``body`` as JSON under ``token``; the raw response, to use as
    ``async with post_chat(...) as resp`` (or to await and release), for a test that reads
    the status, headers or body itself. ``headers`` add to the bearer token."""
    return http.post(
        url + "/api/chat",
        json=body,
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
    )


async def chat(
    http: aiohttp.ClientSession, url: str, token: str, **body: Any
) -> list[dict[str, Any]]:
    """``POST /api/chat`` that must answer 200 in NDJSON; its lines."""
    async with post_chat(http, url, token, **body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson", resp.content_type
        return await read_ndjson(resp)


async def chat_result(
    http: aiohttp.ClientSession, url: str, token: str, **body: Any
) -> tuple[int, list[dict[str, Any]]]:
    """``POST /api/chat`` whatever it answers: ``(status, NDJSON lines)`` on a 200,
    ``(status, [the error's JSON body])`` otherwise."""
    async with post_chat(http, url, token, **body) as resp:
        if resp.status != 200:
            return resp.status, [orjson.loads(await resp.read())]
        return 200, await read_ndjson(resp)


async def new_conversation(http: aiohttp.ClientSession, url: str, token: str) -> str:
    """A new conversation with one answered demo turn (``POST /api/chat``); its id."""
    lines = await chat(http, url, token, message="warm", aiModel="demo")
    return str(lines[0]["data"]["conversationId"])


CONTROL = frozenset({"subscribed", "ack", "fault"})


@dataclass
class WsPeer:
    """A WebSocket client that records every server frame."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    #: Payload bytes of every text frame received so far.
    received: int = 0
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> WsPeer:
        self._task = asyncio.get_running_loop().create_task(self._reader())
        return self

    async def _reader(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.received += len(msg.data.encode())
                self.frames.append(orjson.loads(msg.data))
                self._new.set()
        self.close_code = self.ws.close_code
        self._new.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.close_code is not None or (self._task is not None and self._task.done()):
                    raise AssertionError(f"socket closed ({self.close_code}) while waiting")
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(scan(), timeout)

    def of(self, conversation_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Log events (not control frames) of one conversation, in arrival order."""
        return [
            f
            for f in self.frames
            if f.get("conversationId") == conversation_id
            and f["type"] not in CONTROL
            and (kind is None or f["type"] == kind)
        ]

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            await self._task


def token_text(events: list[dict[str, Any]], message_id: str) -> str:
    return "".join(
        e["text"] for e in events if e.get("type") == "token" and e["messageId"] == message_id
    )


def check_seq(events: list[dict[str, Any]]) -> None:
    """The contract's ordering guarantee for one subscriber of one conversation."""
    previous: int | None = None
    for event in events:
        if event["type"] == "reset":
            previous = event["seq"]
            continue
        if previous is not None:
            step = event.get("merged", 1) if event["type"] == "token" else 1
            assert event["seq"] == previous + step, (previous, event)
        previous = event["seq"]
