"""Users, sessions and cookies for tests.

Users with a session (:func:`make_user_session`, :func:`bearer`) come from
:mod:`standins.users`, which the benchmarks share.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any

import aiohttp

from server.auth.cookies import CookieCodec
from server.core.config import Settings
from standins.users import bearer as bearer
from standins.users import make_user_session as make_user_session

if TYPE_CHECKING:
    from tests.conftest import Live


def codec(settings: Settings) -> CookieCodec:
    return CookieCodec(settings.auth_secret, secure=settings.secure_cookies)


def session_cookie(settings: Settings, token: str) -> dict[str, str]:
    """A ``Cookie`` header carrying the signed session cookie for ``token``."""
    c = codec(settings)
    return {"Cookie": f"{c.session_name}={c.session_value(token)}"}


def set_cookies(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``Set-Cookie`` morsels of a response, by name."""
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return dict(jar.items())


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def running(settings_factory: Callable[[int], Settings]) -> AbstractAsyncContextManager[Live]:
    """An extra app for one test (:func:`tests.conftest.live_from`)."""
    from tests.conftest import live_from

    return live_from(settings_factory)


async def raw_http(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, CRLF-separated, no final blank line) and
    ``body`` byte for byte over a fresh socket — bytes no HTTP client library would send —
    and return (status, headers with lower-case names, body)."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        host = f"Host: {parts.hostname}:{parts.port}".encode()
        length = f"Content-Length: {len(body)}".encode() if body else b""
        lines = [head.rstrip(b"\r\n"), host, b"Connection: close"] + ([length] if length else [])
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header_block, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}\n{value.strip()}" if key in headers else value.strip()
    return int(status_line.split()[1]), headers, payload


_ips = itertools.count(1)


def fresh_ip() -> dict[str, str]:
    """A client address of its own (the test apps trust 127.0.0.1 as a proxy), so that the
    wrong codes of one test never rate-limit another."""
    n = next(_ips)
    return {"X-Forwarded-For": f"10.1.{n // 250}.{n % 250 + 1}"}


async def new_code(
    http: aiohttp.ClientSession, live: Any, client_id: str = "cero-cli", scope: str = "openid"
) -> dict[str, Any]:
    """``POST /api/auth/device/code``; the answer's JSON."""
    async with http.post(
        live.url + "/api/auth/device/code", json={"client_id": client_id, "scope": scope}
    ) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data
