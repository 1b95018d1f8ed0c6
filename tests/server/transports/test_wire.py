"""``RawWriter``: frames written during one pass of the event loop leave in one write at
the end of the pass, in call order, and nothing leaves once the writer is shut.

Driven over a real loopback connection to a live aiohttp server: the client is a raw
non-blocking socket, so "nothing sent yet" is a ``recv`` that finds no bytes (loopback
delivers a send before the ``send`` call returns).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.transports.wire import RawWriter, chunk, send_headers

Body = Callable[[RawWriter, socket.socket], Awaitable[None]]


def _available(sock: socket.socket) -> bytes:
    """Every byte the peer has sent so far, without waiting."""
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


class _Peer:
    """A live server whose one route runs ``body`` against a raw client socket."""

    def __init__(self) -> None:
        self.body: Body | None = None
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        self.client: socket.socket | None = None
        self.head_read = asyncio.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        send_headers(response)
        writer = RawWriter(request)
        await self.head_read.wait()
        assert self.body is not None and self.client is not None
        try:
            await self.body(writer, self.client)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()
        return response


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    state = _Peer()
    app = web.Application()
    app.router.add_get("/", state.handler)
    server = TestServer(app)
    await server.start_server()
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, (server.host, server.port))
    state.client = sock
    try:
        yield state
    finally:
        sock.close()
        await server.close()


async def _run(peer: _Peer, body: Body) -> None:
    """Send the request, read the response head, then let ``body`` run in the handler."""
    assert peer.client is not None
    loop = asyncio.get_running_loop()
    peer.body = body
    await loop.sock_sendall(peer.client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(peer.client, 4096)
    assert head.startswith(b"HTTP/1.1 200")
    assert head.endswith(b"\r\n\r\n"), "no body byte may come before the body writes"
    peer.head_read.set()
    await asyncio.wait_for(peer.done.wait(), 10)
    if peer.error is not None:
        raise peer.error


async def test_one_pass_leaves_in_one_write_at_its_end(peer: _Peer) -> None:
    async def body(writer: RawWriter, client: socket.socket) -> None:
        writer.write_soon(chunk(b"a"))
        writer.write_soon(chunk(b"b"))
        assert _available(client) == b"", "write_soon must not send before the pass ends"
        await asyncio.sleep(0)  # the pass ends: its flush runs before this task resumes
        assert _available(client) == chunk(b"a") + chunk(b"b")

    await _run(peer, body)


async def test_an_immediate_write_goes_behind_what_is_pending(peer: _Peer) -> None:
    async def body(writer: RawWriter, client: socket.socket) -> None:
        writer.write_soon(chunk(b"a"))
        writer.write(chunk(b"b"))  # sends the pending frame first
        assert _available(client) == chunk(b"a") + chunk(b"b")
        writer.write_soon(chunk(b"c"))
        await writer.drain()  # a drain sends what is pending too
        assert _available(client) == chunk(b"c")

    await _run(peer, body)


async def test_nothing_leaves_after_shut_down(peer: _Peer) -> None:
    async def body(writer: RawWriter, client: socket.socket) -> None:
        writer.write_soon(chunk(b"a"))
        writer.shut_down()  # what was pending goes out first (it came before the Close)
        assert _available(client) == chunk(b"a")
        writer.write_soon(chunk(b"late"))
        writer.write(chunk(b"later"))
        writer.flush()
        await asyncio.sleep(0)
        assert _available(client) == b""

    await _run(peer, body)
