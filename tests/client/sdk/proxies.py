"""Two stand-ins for what sits between a client and the server, for the library's tests.

- :class:`Relay`: a TCP relay on a port of its own that copies bytes both ways and can
  cut every open connection at once (:meth:`Relay.cut`), as a network failure does: the
  client sees its connection drop mid-stream, no Close frame, no chunked terminator.
- :class:`RefusingProxy`: an aiohttp reverse proxy that passes plain HTTP through
  (streamed responses included: SSE goes through as it is written) and refuses every
  WebSocket upgrade the way real proxies do: ``403``, ``405``, ``400``, or by closing the
  connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import aiohttp
from aiohttp import web

Refusal = Literal[400, 403, 405, "close"]
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)


class Relay:
    """Copies TCP bytes between its port and ``upstream`` (``host``, ``port``)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""
        #: Connections accepted so far.
        self.accepted = 0
        self._gate = asyncio.Event()
        self._gate.set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await self._gate.wait()  # held: the client waits for its connection, as on a dead link
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        link = (writer, up_writer)
        self._links.add(link)
        loop = asyncio.get_running_loop()
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._copy(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    def hold(self) -> None:
        """New connections wait (not refused, not answered) until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def cut(self) -> int:
        """Abort every open connection, both sides, without a goodbye; how many."""
        links = list(self._links)
        self._links.clear()
        for client_side, server_side in links:
            for writer in (client_side, server_side):
                transport = writer.transport
                if not transport.is_closing():
                    transport.abort()
        return len(links)

    async def stop(self) -> None:
        self.release()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


class RefusingProxy:
    """A reverse proxy to ``upstream`` that refuses WebSocket upgrades with ``refusal``."""

    def __init__(self, upstream: str, refusal: Refusal = 403) -> None:
        self.upstream = upstream.rstrip("/")
        self.refusal: Refusal = refusal
        self.refused = 0
        self.passed = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None), auto_decompress=False
        )
        return self.url

    async def stop(self) -> None:
        if self._session is not None:  # ends the streams it is passing through
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.refused += 1
            if self.refusal == "close":
                transport = request.transport
                if transport is not None:
                    transport.abort()
                raise web.HTTPBadRequest()  # never written: the connection is gone
            return web.Response(status=self.refusal, text="WebSockets are not allowed here\n")
        self.passed += 1
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
