"""Load-generating client processes: many WebSocket or SSE subscribers per process.

The clients are plain ``asyncio.Protocol`` objects that speak just enough WebSocket
(RFC 6455: handshake, masked client frames, unmasked server frames, ping → pong) or
HTTP/1.1 SSE to subscribe and count; no per-message coroutine, no JSON parsing of events
they do not need. Each ``token`` frame is recognised by its prefix and its send
timestamps (``⟨1732550000.123456⟩``; a merged token carries several) are read with one
regex, so a client process costs a few microseconds per delivery and stays well clear of
the server's CPU use (the benchmark reports both).

A process is driven over a ``multiprocessing`` pipe: it connects and subscribes, says
``ready``, waits for ``go`` with a measurement window ``[t0, t1)`` (wall clock), then sends
back counts and the latency samples of that window and waits for ``stop``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, cast

import orjson

from bench.common import raise_nofile

TS = re.compile(rb"\xe2\x9f\xa8(\d+\.\d+)")
TOKEN_PREFIX = b'{"type":"token"'
#: The events that end an answer (WebSocket frames start with them; SSE pieces name them).
TERMINAL = {
    b'{"type":"done"': "done",
    b'{"type":"error"': "error",
    b'{"type":"cancelled"': "cancelled",
}
WS_KEY = base64.b64encode(b"cero-bench-key-0").decode()
MASK = b"\x00\x00\x00\x00"  # a zero mask key keeps client frames cheap (still masked frames)


def ws_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + MASK + payload


def subscribe_frame(conversation_id: str) -> bytes:
    return ws_client_frame(orjson.dumps({"type": "subscribe", "conversationId": conversation_id}))


def ws_handshake(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def sse_request(host: str, port: int, path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    ).encode()


class Stats:
    """What one client process saw; only the window ``[t0, t1)`` is measured."""

    def __init__(self) -> None:
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.latencies = array("d")
        self.tokens = 0  # token deliveries (timestamps) in the window
        self.frames = 0  # token frames in the window (a merged frame is one)
        self.tokens_all = 0
        self.frames_all = 0
        self.other_frames = 0
        self.ready = 0
        self.failed = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        #: Terminal events (``done`` / ``error`` / ``cancelled``) seen since the last ``go``,
        #: and how many of them arrived before the window's end (answers shorter than it).
        self.ended: dict[str, int] = {}
        self.ended_early = 0
        self.on_ready: Callable[[], None] | None = None

    def token(self, payload: bytes, now: float) -> None:
        stamps = TS.findall(payload)
        self.frames_all += 1
        self.tokens_all += len(stamps)
        if self.t0 <= now < self.t1:
            self.frames += 1
            self.tokens += len(stamps)
            append = self.latencies.append
            for stamp in stamps:
                append(now - float(stamp))

    def terminal(self, payload: bytes, now: float) -> bool:
        kind = TERMINAL.get(payload[: payload.find(b'",') + 1])
        if kind is None:
            return False
        self.ended[kind] = self.ended.get(kind, 0) + 1
        if now < self.t1:
            self.ended_early += 1
        return True

    def mark_ready(self) -> None:
        self.ready += 1
        if self.on_ready is not None:
            self.on_ready()


class WsClient(asyncio.Protocol):
    """One WebSocket connection; subscribes to ``conversations`` once upgraded."""

    def __init__(self, stats: Stats, request: bytes, conversations: list[str]) -> None:
        self.stats = stats
        self.request = request
        self.conversations = conversations
        self.waiting = len(conversations)
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.head = b""
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head[:12]
            data, self.head = self.head[end + 4 :], b""
            if b" 101" not in status:
                self.stats.failed += 1
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded = True
            if self.transport is not None and self.conversations:
                self.transport.write(b"".join(subscribe_frame(c) for c in self.conversations))
            if not self.conversations:
                self.stats.mark_ready()
            if not data:
                return
        if self.buf:
            data = self.buf + data
            self.buf = b""
        now = time.time()
        size = len(data)
        pos = 0
        stats = self.stats
        while size - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            payload = data[start:end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x1:
                if payload.startswith(TOKEN_PREFIX):
                    stats.token(payload, now)
                else:
                    stats.other_frames += 1
                    if stats.terminal(payload, now):
                        continue
                    if self.waiting and payload.startswith(b'{"type":"subscribed"'):
                        self.waiting -= 1
                        if not self.waiting:
                            stats.mark_ready()
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(ws_client_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                stats.close_codes[code] = stats.close_codes.get(code, 0) + 1
        if pos < size:
            self.buf = data[pos:]


class SseClient(asyncio.Protocol):
    """One SSE stream (HTTP/1.1, chunked); ready once ``retry:`` arrives."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.started = False
        self.ready = False
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.started:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 200" not in buf[:12]:
                self.stats.failed += 1
                if self.transport is not None:
                    self.transport.close()
                self.buf = b""
                return
            self.started = True
            buf = buf[end + 4 :]
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.buf = buf
            return
        self.buf = buf[cut + 2 :]
        now = time.time()
        stats = self.stats
        for piece in buf[:cut].split(b"\n\n"):
            if b"\nevent: token\n" in piece:
                stats.token(piece, now)
            elif not self.ready and b"retry:" in piece:
                self.ready = True
                stats.mark_ready()
            else:
                stats.other_frames += 1


async def _recv(conn: Connection, timeout: float) -> Any:
    """Wait for the parent's next message without blocking the loop (polling keeps the pipe
    blocking: uvloop's ``add_reader`` would make it non-blocking, breaking big sends)."""
    deadline = time.monotonic() + timeout
    while not conn.poll():
        if time.monotonic() > deadline:
            raise TimeoutError("no word from the parent")
        await asyncio.sleep(0.02)
    return conn.recv()


async def _run(conn: Connection, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    host, port = spec["host"], int(spec["port"])
    kind = spec["kind"]
    entries: list[dict[str, Any]] = spec["conns"]
    expected = len(entries)
    all_ready = loop.create_future()

    def on_ready() -> None:
        if stats.ready >= expected and not all_ready.done():
            all_ready.set_result(None)

    stats.on_ready = on_ready
    transports: list[asyncio.BaseTransport] = []
    gate = asyncio.Semaphore(int(spec.get("concurrency", 32)))

    async def open_one(entry: dict[str, Any]) -> None:
        async with gate:
            before = stats.ready
            try:
                # An entry may name its own server (scenario 2 with --procs N).
                at = int(entry.get("port", port))
                if kind == "ws":
                    request = ws_handshake(host, at, entry["path"])
                    factory: Callable[[], asyncio.Protocol] = lambda: WsClient(  # noqa: E731
                        stats, request, list(entry.get("subscribe", ()))
                    )
                else:
                    request = sse_request(host, at, entry["path"], entry.get("token"))
                    factory = lambda: SseClient(stats, request)  # noqa: E731
                transport, _ = await asyncio.wait_for(loop.create_connection(factory, host, at), 30)
                transports.append(transport)
                # Pace the handshakes: wait (bounded) until this one is ready.
                deadline = loop.time() + 10
                while (
                    stats.ready == before and loop.time() < deadline and not transport.is_closing()
                ):
                    await asyncio.sleep(0.002)
            except (OSError, TimeoutError):
                stats.failed += 1

    if expected:
        await asyncio.gather(*(open_one(e) for e in entries))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(all_ready), float(spec.get("ready_timeout", 60)))
    conn.send(("ready", {"ready": stats.ready, "failed": stats.failed, "pid": os.getpid()}))

    while True:
        message = await _recv(conn, 3600)
        if message[0] == "count":  # terminal events so far (waiting for answers to end)
            conn.send(
                (
                    "count",
                    {
                        "ended": dict(stats.ended),
                        "ended_early": stats.ended_early,
                        "closed": stats.closed,
                    },
                )
            )
            continue
        if message[0] != "go":
            break
        stats.latencies = array("d")
        stats.tokens = stats.frames = 0
        stats.ended = {}
        stats.ended_early = 0
        stats.t0, stats.t1 = float(message[1]), float(message[2])
        await asyncio.sleep(max(0.0, stats.t1 - time.time()) + 0.2)
        summary = {
            "tokens": stats.tokens,
            "frames": stats.frames,
            "tokens_all": stats.tokens_all,
            "frames_all": stats.frames_all,
            "other_frames": stats.other_frames,
            "ready": stats.ready,
            "failed": stats.failed,
            "closed": stats.closed,
            "close_codes": stats.close_codes,
            "ended": dict(stats.ended),
        }
        conn.send(("result", summary, stats.latencies.tobytes()))
    for transport in transports:
        transport.abort()  # type: ignore[attr-defined]
    conn.send(("stopped", stats.closed))


def client_process(conn: Connection, spec: dict[str, Any]) -> None:
    """Entry point of one client process (``multiprocessing``, spawn)."""
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_run(conn, spec))
    else:
        uvloop.run(_run(conn, spec))


def open_non_reader(
    host: str, port: int, kind: str, path: str, conversation_id: str, token: str | None = None
) -> socket.socket:
    """A subscriber that connects, subscribes and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, port))
    if kind == "ws":
        sock.sendall(ws_handshake(host, port, path))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: leave every frame after the head unread
            if not chunk:
                raise ConnectionError("non-reader: closed during the handshake")
            head += chunk
        if b" 101" not in head[:12]:
            raise ConnectionError(f"non-reader: {head[:40]!r}")
        sock.sendall(subscribe_frame(conversation_id))
    else:
        sock.sendall(sse_request(host, port, path, token))
    return sock
