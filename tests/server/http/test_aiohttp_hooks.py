"""Every private aiohttp detail the transports lean on, checked one by one.

aiohttp is pinned to the range these were tested with (pyproject.toml); an upgrade that
renames or removes one must fail here, loudly, instead of silently losing flow control,
the early header flush or the contract's pong timeout.
"""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_protocol import RequestHandler

from server.transports.wire import RawWriter, chunk, send_headers
from server.transports.ws_socket import CeroWebSocket


def test_request_handler_has_the_drain_helper() -> None:
    """``RawWriter.drain`` awaits the protocol's own flow control."""
    assert inspect.iscoroutinefunction(RequestHandler._drain_helper)


def test_stream_writer_can_send_headers_early() -> None:
    """``wire.send_headers`` flushes the buffered head through the payload writer."""
    assert callable(StreamWriter.send_headers)
    assert "_payload_writer" in getattr(web.StreamResponse, "__slots__", ()) or hasattr(
        web.StreamResponse, "_payload_writer"
    )


def test_websocket_pong_wait_is_settable() -> None:
    ws = CeroWebSocket(heartbeat=20.0, pong_timeout=20.0)
    assert ws._pong_heartbeat == 20.0  # aiohttp's own default would be heartbeat / 2
    assert web.WebSocketResponse(heartbeat=20.0)._pong_heartbeat == 10.0


async def test_the_hooks_work_on_a_live_response() -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        writer = RawWriter(request)
        seen["payload_writer"] = type(response._payload_writer).__name__
        send_headers(response)  # the head is on the wire before any body write
        writer.write(chunk(b"raw"))  # chunked framing: the body aiohttp will end
        await writer.drain()
        seen["drained"] = True
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        assert response.status == 200
        assert await response.read() == b"raw"
    assert seen == {"payload_writer": "StreamWriter", "drained": True}
    assert aiohttp.__version__.startswith("3.14.")
