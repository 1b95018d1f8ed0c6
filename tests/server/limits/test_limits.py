"""Connection-level limits found by the outside probe (issue 15, bugs 8 and 10), over loopback.

- an oversized header, URL or header flood is answered JSON (431 / 414) with an
  ``X-Request-ID``, never echoing the value;
- a connection that sends nothing, or its head too slowly, is closed (408 when it started);
  idle keep-alive ends after ``CERO_KEEPALIVE_TIMEOUT``;
- open connections are capped per client address (429) and in all (503), below the
  open-files limit, whose soft value is raised to the hard one at start; ``/healthz`` keeps
  answering on reserved slots, and another client's chat is served.

Slow request bodies (``CERO_BODY_TIMEOUT``, ``CERO_MIN_BODY_RATE``) are tested in
``tests/server/http/test_slow_bodies.py``.

Servers run in process through the same runner as ``cero-api serve`` (``make_runner``), and
once as a ``cero-api serve`` subprocess under a low ``ulimit -n``. Counts are scaled for CI.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import unused_port

from server.http.protocol import CeroRunner
from server.limits.connection_guard import ConnectionGuard
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import make_settings
from tests.process_stats import METRICS_TOKEN
from tests.server_process import serve

OTHER = "127.0.0.2"  # "another client": a second loopback address (Linux routes 127/8)


class Served(NamedTuple):
    url: str
    guard: ConnectionGuard  # its connection counts: what the tests wait on


@asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[Served]:
    """The app behind ``make_runner`` on a free port (as ``cero-api serve`` runs it)."""
    from server.app import create_app
    from server.http.protocol import make_runner
    from server.storage import db

    port = unused_port()
    settings = make_settings(f"sqlite:///{tmp_path / 'cero.db'}", port=port, **overrides)
    db.bind(settings.database_url, lock_timeout=db.lock_timeout(settings))
    app = create_app(settings)
    runner = make_runner(
        app, settings, max_connections=settings.max_connections, shutdown_timeout=2
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    assert isinstance(runner, CeroRunner)
    try:
        yield Served(f"http://127.0.0.1:{port}", runner.guard)
    finally:
        await runner.cleanup()


async def raw(
    url: str, data: bytes, *, local: str | None = None, wait: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; return status, lower-case headers and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), local_addr=(local, 0) if local else None
    )
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
    return parse(answer)


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def idle_connection(url: str, local: str | None = None) -> asyncio.StreamReader:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), local_addr=(local, 0) if local else None
    )
    _OPEN.append(writer)
    return reader


_OPEN: list[asyncio.StreamWriter] = []


def close_idle() -> None:
    while _OPEN:
        _OPEN.pop().close()


async def healthz(url: str, local: str = OTHER) -> int:
    connector = aiohttp.TCPConnector(local_addr=(local, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        assert await resp.json() == {"status": "ok"}
        return resp.status


async def short_chat(url: str, headers: dict[str, str], *, local: str = OTHER) -> str:
    connector = aiohttp.TCPConnector(local_addr=(local, 0), force_close=True)
    async with (
        aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http,
        http.post(
            url + "/api/chat",
            json={"message": "hi", "aiModel": "demo"},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=20),
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
    assert lines[-1]["topic"] == "done", lines[-1]
    return str(lines[-1]["data"]["fullText"])


def json_error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/json"), headers
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", headers.get("x-request-id", "")), headers
    # Written before any request object exists, yet with the headers every answer carries.
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("referrer-policy") == "same-origin", headers
    assert headers.get("server") == "cero", headers  # no product version
    data: dict[str, Any] = orjson.loads(body)
    # The contract's shape; a 429 also says how long to wait (CONTRACT.md).
    assert set(data) == (
        {"error", "code", "retryAfter"} if "retryAfter" in data else {"error", "code"}
    )
    return data


# -- bug 8: parser errors ------------------------------------------------------------------


def test_aiohttp_hooks_still_exist() -> None:
    """server/http/protocol.py leans on these aiohttp internals: if an upgrade moves one,
    this fails first (and the behaviour tests below say what broke)."""
    from aiohttp.http_exceptions import LineTooLong
    from aiohttp.web_protocol import RequestHandler

    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params[:5] == ["self", "request", "status", "exc", "message"], params
    assert "handle_error" in inspect.getsource(RequestHandler._make_error_handler)
    for name in (
        "_waiter",
        "_request_count",
        "_request_in_progress",
        "_messages",
        "_current_request",
    ):
        assert name in RequestHandler.__slots__, name
    for method in ("connection_made", "connection_lost", "data_received", "force_close"):
        assert callable(getattr(RequestHandler, method)), method
    init = inspect.signature(RequestHandler.__init__).parameters
    for name in ("keepalive_timeout", "max_line_size", "max_field_size", "max_headers"):
        assert name in init, name
    assert LineTooLong(b"x", 8190).args[1] == 8190  # the limit tells 414 from 431
    # The body deadline watches the payload aiohttp queues with each request head...
    from aiohttp.http_writer import StreamWriter
    from aiohttp.streams import StreamReader

    for method in ("is_eof", "feed_eof", "set_exception"):
        assert callable(getattr(StreamReader, method)), method
    assert "self.total_bytes" in inspect.getsource(StreamReader.__init__)
    # ...and tells a started response by what its writer holds or sent.
    writer_init = inspect.getsource(StreamWriter.__init__)
    assert "self._headers_buf" in writer_init, "StreamWriter._headers_buf moved"
    assert "output_size" in inspect.getsource(StreamWriter)
    assert "self._protocol.transport" in inspect.getsource(StreamWriter)
    assert "_make_server" in vars(web.AppRunner)
    source = inspect.getsource(web.Server)
    assert "self._kwargs" in source and "self._loop" in source
    assert "return RequestHandler(self, loop=self._loop, **self._kwargs)" in source


async def test_oversized_header_is_431_json_without_echo(tmp_path: Path) -> None:
    secret = "Sekr1t" + "a" * 9000
    async with serving(tmp_path) as (url, _):
        status, headers, body = await raw(
            url,
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\r\n".encode(),
        )
        assert status == 431
        assert json_error(headers, body)["code"] == "header_too_large"
        assert b"Sekr1t" not in body and b"Bearer" not in body
        assert await healthz(url) == 200


async def test_long_url_is_414_json(tmp_path: Path) -> None:
    async with serving(tmp_path) as (url, _):
        path = "/api/models?q=" + "b" * 9000
        status, headers, body = await raw(url, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 414
        assert json_error(headers, body)["code"] == "uri_too_long"
        assert b"bbbb" not in body
        # A URL just under the limit is still served.
        ok = "/healthz?q=" + "b" * 8000
        status, _, _ = await raw(
            url, f"GET {ok} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 200


async def test_header_floods_are_431_json(tmp_path: Path) -> None:
    async with serving(tmp_path, max_headers=1000, max_head_bytes=4096) as (url, _):
        many = "".join(f"X-Flood-{n}: v\r\n" for n in range(1001))
        status, headers, body = await raw(url, f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        assert status == 431 and json_error(headers, body)["code"] == "too_many_headers"
        big = "".join(f"X-Big-{n}: {'v' * 1000}\r\n" for n in range(150))  # 150 KB head
        status, headers, body = await raw(url, f"GET / HTTP/1.1\r\nHost: x\r\n{big}\r\n".encode())
        assert status == 431 and json_error(headers, body)["code"] == "headers_too_large"
        assert b"vvvv" not in body
        status, headers, body = await raw(url, b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
        assert status == 400 and json_error(headers, body)["code"] == "bad_request"
        assert await healthz(url) == 200


# -- bug 10: timeouts and connection caps --------------------------------------------------


async def test_silent_slow_and_idle_connections_are_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, header_timeout=0.5, keepalive_timeout=1.0) as (url, _):
        started = time.monotonic()
        silent = await idle_connection(url)
        assert await asyncio.wait_for(silent.read(), 5) == b""  # closed, nothing said
        assert time.monotonic() - started < 3
        status, headers, body = await raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert status == 408 and json_error(headers, body)["code"] == "request_timeout"
        # Keep-alive: one request, then idle; the server closes it.
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 3
        writer.close()
        assert await healthz(url) == 200


async def test_connections_per_ip_are_capped(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections_per_ip=5, header_timeout=30) as (url, guard):
        try:
            for _ in range(5):
                await idle_connection(url)
            await until(lambda: guard.per_ip("127.0.0.1") == 5, 5)
            status, headers, body = await raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 429 and headers["retry-after"] == "1"
            assert json_error(headers, body)["code"] == "too_many_connections"
            assert json_error(headers, body)["retryAfter"] == 1  # CONTRACT.md: every 429
            # Another client is served meanwhile: /healthz and a short chat.
            assert await healthz(url, OTHER) == 200
            token, _ = await make_user_session("Other")
            assert await short_chat(url, bearer(token))
            # The refusal is counted with every other 429 (docs/metrics.md).
            scrape = (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Authorization: Bearer {METRICS_TOKEN}\r\n\r\n".encode()
            )
            _, _, metrics = await raw(url, scrape, local=OTHER)
            assert b'cero_limit_refusals_total{limit="connections_per_ip"} 1.0' in metrics
        finally:
            close_idle()
        await until(lambda: guard.per_ip("127.0.0.1") == 0, 5)
        assert await healthz(url, "127.0.0.1") == 200  # its slots are back


async def test_total_cap_keeps_probes_answering(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=8, connection_reserve=2, header_timeout=1.5) as (
        url,
        guard,
    ):
        token, _ = await make_user_session("Other")
        try:
            idle = [await idle_connection(url, f"127.0.1.{n}") for n in range(8)]
            await until(lambda: guard.total == 8, 5)
            # Full: a probe still answers on a reserved slot, anything else is 503 JSON.
            assert await healthz(url) == 200
            status, headers, body = await raw(
                url, b"GET /api/models HTTP/1.1\r\nHost: x\r\n\r\n", local=OTHER
            )
            assert status == 503 and json_error(headers, body)["code"] == "over_capacity"
            # Reserved slots taken too: answered 503 at once and closed.
            for n in range(2):
                idle.append(await idle_connection(url, f"127.0.2.{n}"))
            await until(lambda: guard.reserved == 2, 5)
            status, headers, body = await raw(
                url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", local=OTHER
            )
            assert status == 503 and json_error(headers, body)["code"] == "over_capacity"
            # The idle ones are dropped after the head timeout; then a chat is served.
            for reader in idle:
                assert await asyncio.wait_for(reader.read(), 5) == b""
            assert await short_chat(url, bearer(token))
        finally:
            close_idle()


def test_connection_guard_counts() -> None:
    from server.limits.connection_guard import Admission, ConnectionGuard, connection_capacity

    guard = ConnectionGuard(
        max_total=3, max_per_ip=2, reserve=2, exempt=lambda address: address == "10.0.0.9"
    )
    assert guard.admit("10.0.0.1") is Admission.ADMIT
    assert guard.admit("10.0.0.1") is Admission.ADMIT
    assert guard.admit("10.0.0.1") is Admission.REFUSE_IP
    assert guard.admit("2001:db8::1") is Admission.ADMIT
    assert guard.admit("2001:db8::2") is Admission.RESERVE  # full; same /64 but under its cap
    assert guard.admit("2001:db8::3") is Admission.REFUSE_FULL  # one reserved slot per /64
    assert guard.admit("10.0.0.9") is Admission.RESERVE  # a trusted proxy: no per-address rule
    assert guard.admit("10.0.0.5") is Admission.REFUSE_FULL  # reserve used up
    guard.release("10.0.0.9", Admission.RESERVE)
    guard.release("10.0.0.1", Admission.ADMIT)
    assert guard.admit("10.0.0.9") is Admission.ADMIT  # a trusted proxy: total only
    guard.release("2001:db8::2", Admission.RESERVE)
    assert guard.reserved == 0 and guard.total == 3
    assert guard.per_ip("10.0.0.1") == 1 and guard.per_ip("10.0.0.9") == 0
    assert connection_capacity(4096, 1024, 256, 16) == 736
    assert connection_capacity(100, 1 << 20, 256, 16) == 100


async def test_idle_connection_flood_under_low_nofile_limit(tmp_path: Path) -> None:
    """``cero-api serve`` under ``ulimit -n`` 128 soft / 256 hard, flooded with more idle
    connections than descriptors: it raises the soft limit, caps connections below it,
    answers the excess 503 JSON, keeps /healthz answering, and serves a chat after the idle
    connections time out. (Before: EMFILE in accept, and nobody was served.)"""
    env: dict[str, str | None] = {
        "BETTER_AUTH_SECRET": None,  # local mode: the sign-in link is announced
        "CERO_DEMO_TOKEN_DELAY": "0.002",
        "CERO_FD_HEADROOM": "64",
        "CERO_CONNECTION_RESERVE": "8",
        "CERO_HEADER_TIMEOUT": "3",
        "CERO_MAX_CONNECTIONS_PER_IP": "1000",
    }

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    async with serve(
        f"sqlite:///{tmp_path / 'cero.db'}",
        cwd=tmp_path,
        env=env,
        command=[str(Path(sys.executable).parent / "cero-api"), "serve"],
        preexec_fn=low_nofile,
    ) as server:
        url = server.url
        try:
            flood = 300  # more than the process has descriptors
            results = await asyncio.gather(
                *(idle_connection(url, "127.0.0.3") for n in range(flood)),
                return_exceptions=True,
            )
            assert all(not isinstance(r, BaseException) for r in results), results
            assert await healthz(url) == 200  # probes answer on a reserved slot
            # Every connection ends: the excess answered 503 JSON and closed at once, the
            # admitted ones closed silently after the head timeout (3 s).
            answers = await asyncio.gather(
                *(
                    asyncio.wait_for(r.read(), 15)
                    for r in results
                    if isinstance(r, asyncio.StreamReader)
                )
            )
            refused = 0
            for data in answers:
                if data:
                    status, headers, body = parse(data)
                    assert status == 503 and json_error(headers, body)["code"] == "over_capacity"
                    refused += 1
            assert refused >= flood - (256 - 64 - 2 * 8) - 8 - 8, refused
        finally:
            close_idle()
        log_text = server.log()
        listening = next(
            orjson.loads(line) for line in log_text.splitlines() if '"listening"' in line
        )
        assert listening["nofile_before"] == 128 and listening["nofile"] == 256
        assert listening["max_connections"] == 256 - 64 - 2 * 8
        link = re.search(r"Sign in: (\S+)", log_text)
        assert link, log_text

        # The admitted idle connections were dropped: a chat works.
        connector = aiohttp.TCPConnector(local_addr=(OTHER, 0))
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            async with http.get(link.group(1)) as resp:
                assert resp.status == 200, await resp.text()
            cookies = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
        assert await short_chat(url, {"Cookie": cookies, "Origin": url})
        assert server.running


async def test_long_lived_streams_outlive_the_head_and_keepalive_timeouts(tmp_path: Path) -> None:
    """The timeouts are for heads, request bodies and idle keep-alive only: a WebSocket and
    a slow chat stream stay open well past all three."""
    async with serving(
        tmp_path,
        header_timeout=0.3,
        keepalive_timeout=0.3,
        body_timeout=0.3,
        min_body_rate=1_000_000,
        demo_token_delay=0.05,
    ) as (url, _):
        token, _ = await make_user_session("Streamer")
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "/api/ws", params={"token": token}) as ws:
                await asyncio.sleep(1.0)  # the behaviour under test: open past both timeouts
                await ws.send_str('{"type": "ping"}')
                answer = await asyncio.wait_for(ws.receive_json(), 5)
                assert answer == {"type": "ack", "of": "ping"}, answer
            started = time.monotonic()
            text = await short_chat(url, bearer(token), local="127.0.0.1")
            assert text and time.monotonic() - started > 0.6  # slower than both timeouts
