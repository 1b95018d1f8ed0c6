"""Security headers (server/http/security_headers.py) over real HTTP, on every route.

Every answer of every route carries ``X-Content-Type-Options: nosniff`` and a
``Referrer-Policy``; every HTML answer (``/app``, ``/device`` signed out, signed in and
posted, and any route that answers HTML) a Content-Security-Policy with
``frame-ancestors 'none'``; ``Strict-Transport-Security`` only when the public URL is https.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from server.http.security_headers import HSTS
from tests.auth_helpers import bearer, fresh_ip, make_user_session, session_cookie
from tests.conftest import Live, live_app


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"trusted_proxies": ["127.0.0.1/32"]}


def _check(resp: aiohttp.ClientResponse, what: str, *, https: bool = False) -> None:
    headers = resp.headers
    assert headers.getall("Server") == ["cero"], what  # never aiohttp's and Python's versions
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") in ("same-origin", "no-referrer"), what
    assert ("Strict-Transport-Security" in headers) is https, what
    if resp.content_type == "text/html":
        policy = headers.get("Content-Security-Policy", "")
        directives = {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";")}
        assert directives.get("frame-ancestors") == "frame-ancestors 'none'", (what, policy)
        assert "default-src" in directives, (what, policy)
        assert "'unsafe-inline'" not in policy and "*" not in policy, (what, policy)
        assert headers.get("X-Frame-Options") == "DENY", what


async def test_every_get_route_and_the_html_pages(live: Live) -> None:
    token, _ = await make_user_session("Page")
    cookie = session_cookie(live.settings, token)
    own = {"Origin": live.settings.public_url}
    paths = {
        route.resource.canonical.replace("{id}", "x").replace("{name}", "app.js")
        for route in live.app.router.routes()
        if route.method == "GET" and route.resource is not None
    }
    html = 0
    async with aiohttp.ClientSession() as http:
        for path in sorted(paths | {"/no-such-page", "/app/nope"}):
            if path == "/api/ws":
                continue  # the upgrade, below (test_websocket_upgrade_names_no_version)
            async with http.get(
                live.url + path,
                headers=fresh_ip(),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                _check(resp, path)
                html += resp.content_type == "text/html"
        async with http.get(live.url + "/api/auth/device", headers=fresh_ip()) as resp:
            _check(resp, "error JSON")
        code_page = [
            ("GET", "/device", {"user_code": "BCDF-GHJK"}, None),
            ("POST", "/device", None, {"user_code": "BCDF-GHJK", "action": "approve"}),
            ("POST", "/device", None, {"user_code": "BCDF-GHJK"}),
        ]
        for method, path, params, form in code_page:
            async with http.request(
                method,
                live.url + path,
                params=params,
                data=form,
                headers={**cookie, **own, **fresh_ip()},
            ) as resp:
                assert resp.content_type == "text/html", (method, path)
                _check(resp, f"{method} {path} signed in")
                html += 1
    assert html >= 5  # /app, /device signed out, and the signed-in device pages


async def test_websocket_upgrade_names_no_version(live: Live) -> None:
    token, _ = await make_user_session("Socket")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(live.url + "/api/ws", headers=bearer(token)) as ws,
    ):
        upgrade = ws._response  # the 101 answer
        assert upgrade.status == 101
        assert upgrade.headers.getall("Server") == ["cero"]


async def test_hsts_only_behind_https(database_url: str) -> None:
    async with (
        live_app(database_url, public_url_setting="https://cero.example") as app,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/healthz", "/app", "/device", "/api/user/whoami"):
            async with http.get(app.url + path) as resp:
                _check(resp, path, https=True)
                assert resp.headers["Strict-Transport-Security"] == HSTS


async def test_streamed_answers_carry_the_request_id(live: Live) -> None:
    """Streams are prepared inside the handler, before the request-id middleware ends: the
    id reaches them through the prepare hook (the client's own id when it sent a valid
    one), on NDJSON, SSE and the WebSocket upgrade alike."""
    token, _ = await make_user_session("Streams")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            live.url + "/api/chat",
            json={"message": "hi"},
            headers={**bearer(token), "X-Request-ID": "client-chosen-1"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["X-Request-ID"] == "client-chosen-1"
            lines = [line async for line in resp.content]
        conversation = next(
            line for line in lines if b'"init"' in line or b'"conversationId"' in line
        )
        assert conversation
        async with http.get(live.url + "/api/conversations", headers=bearer(token)) as resp:
            cid = (await resp.json())["conversations"][0]["id"]
        async with http.get(
            live.url + f"/api/conversations/{cid}/events", headers=bearer(token)
        ) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            assert len(resp.headers["X-Request-ID"]) == 32  # one the server chose
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token))
        assert len(ws._response.headers["X-Request-ID"]) == 32
        await ws.close()
