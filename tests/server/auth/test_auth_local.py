"""Local sign-in (the one-time start-up link) and the server-rendered /device page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import structlog

from server.auth.local import issue_link
from server.core.ids import token_hash
from server.storage.tables import LocalSignInLink
from standins.live_app import Live
from tests.auth_helpers import bearer, cookie_header, set_cookies
from tests.conftest import live_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: What a browser's navigation asks for.
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def link_in(events: Sequence[Mapping[str, Any]], err: str) -> str | None:
    """The sign-in link printed on stderr; the log announces it without its token."""
    found = [e for e in events if e.get("event") == "local_sign_in"]
    assert len(found) <= 1
    links = re.findall(r"^Sign in: (\S+)$", err, flags=re.MULTILINE)
    assert len(links) == len(found)
    if not found:
        return None
    link = str(links[0])
    secret = link.partition("?token=")[2]
    assert secret and secret not in repr(found[0])
    assert found[0]["url"] == link.partition("?")[0]
    return link


async def test_local_link_works_once(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with structlog.testing.capture_logs() as events:
        ctx = live_app(database_url)
        live = await ctx.__aenter__()
    try:
        url = link_in(events, capsys.readouterr().err)
        assert url is not None
        assert url.startswith(f"{live.settings.public_url}/auth/local?token=")
        path = urlsplit(url)
        target = f"{live.url}{path.path}?{path.query}"
        async with aiohttp.ClientSession() as http:
            async with http.get(target + "&next=//evil.example", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/app"
                token = resp.headers["set-auth-token"]
                cookies = set_cookies(resp)
                session = cookies["better-auth.session_token"]
                assert session["httponly"] and session["samesite"] == "Lax"
            async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as resp:
                assert (await resp.json())["user"]["name"] == "Local user"
            async with http.get(
                live.url + "/api/user/whoami",
                headers=cookie_header({"better-auth.session_token": session.value}),
            ) as resp:
                assert resp.status == 200
            async with http.get(target, allow_redirects=False) as resp:
                assert resp.status == 403
                refusal = await resp.json()
                assert refusal["code"] == "forbidden" and refusal["reason"] == "used"
                assert "cero-api sign-in-link" in refusal["error"]
            # A browser gets a page that says what happened and how to get a new link.
            async with http.get(target, headers=BROWSER, allow_redirects=False) as resp:
                assert resp.status == 403 and resp.content_type == "text/html"
                assert resp.headers["Cache-Control"] == "no-store"
                assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
                html = await resp.text()
                assert "already used" in html and "<code>cero-api sign-in-link</code>" in html
                assert "<form" not in html  # no new link over HTTP, not even to loopback
            # Reloaded in the browser it signed in: that browser goes on to the app.
            jar = cookie_header({"better-auth.session_token": session.value})
            async with http.get(target, headers={**BROWSER, **jar}, allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/app"
                assert "set-auth-token" not in resp.headers  # no new session
    finally:
        await ctx.__aexit__(None, None, None)


async def test_expired_and_unknown_links_are_refused_with_a_reason(live: Live) -> None:
    expired = await issue_link(0)  # expires as it is stored
    fresh = await issue_link(60)
    async with aiohttp.ClientSession() as http:
        for token, reason, words in (
            (expired, "expired", "has expired"),
            ("not-a-link", "invalid", "not valid"),
            ("", "invalid", "not valid"),
            ("x" * 300, "invalid", "not valid"),
        ):
            path = f"{live.url}/auth/local?token={token}"
            async with http.get(path, allow_redirects=False) as resp:
                assert resp.status == 403
                assert (await resp.json())["reason"] == reason
            async with http.get(path, headers=BROWSER, allow_redirects=False) as resp:
                assert resp.status == 403 and words in await resp.text()
        # Issued later, another link still works once: the two are independent.
        path = f"{live.url}/auth/local?token={fresh}&next=/app%3Fx%3D1"
        async with http.get(path, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/app?x=1"
        async with http.get(path, allow_redirects=False) as resp:
            assert resp.status == 403
    # Only the hash is stored.
    stored = await LocalSignInLink.select(LocalSignInLink.token_hash).run()
    assert {row["token_hash"] for row in stored} >= {token_hash(fresh), token_hash(expired)}
    assert not any(fresh in str(row) for row in stored)


async def test_a_link_is_redeemed_once_under_concurrency(live: Live) -> None:
    token = await issue_link(60)
    async with aiohttp.ClientSession() as http:

        async def open_link() -> int:
            path = f"{live.url}/auth/local?token={token}"
            async with http.get(path, allow_redirects=False) as resp:
                return resp.status

        statuses = await asyncio.gather(*(open_link() for _ in range(8)))
    assert sorted(statuses) == [302] + [403] * 7


async def test_no_link_and_403_on_a_non_loopback_bind(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with structlog.testing.capture_logs() as events:
        ctx = live_app(database_url, host="0.0.0.0")
        live = await ctx.__aenter__()
    try:
        err = capsys.readouterr().err
        assert link_in(events, err) is None
        assert "Sign in:" not in err
        async with aiohttp.ClientSession() as http:
            async with http.get(live.url + "/auth/local?token=anything") as resp:
                assert resp.status == 403
                assert (await resp.json())["code"] == "forbidden"
            async with http.get(live.url + "/auth/local?token=anything", headers=BROWSER) as resp:
                assert resp.status == 403 and "Local sign-in is off" in await resp.text()
    finally:
        await ctx.__aexit__(None, None, None)


async def test_https_public_url_gives_secure_prefixed_cookies(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with structlog.testing.capture_logs() as events:
        ctx = live_app(database_url, public_url_setting="https://cero.example")
        live = await ctx.__aenter__()
    try:
        url = link_in(events, capsys.readouterr().err)
        assert url is not None and url.startswith("https://cero.example/auth/local?token=")
        path = urlsplit(url)
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{live.url}{path.path}?{path.query}", allow_redirects=False
            ) as resp:
                cookies = set_cookies(resp)
        session = cookies["__Secure-better-auth.session_token"]
        assert session["secure"] and session["httponly"]
        assert cookies["__Secure-better-auth.session_data"]["secure"]
    finally:
        await ctx.__aexit__(None, None, None)


async def test_device_page_flow(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # "*": any client id is accepted (the operator's opt-out), so the page must say the
    # client is unverified and show its id only as escaped text.
    with structlog.testing.capture_logs() as events:
        ctx = live_app(database_url, device_client_ids=["*"])
        live = await ctx.__aenter__()
    try:
        own = live.settings.public_url
        async with aiohttp.ClientSession() as http:
            async with http.post(
                live.url + "/api/auth/device/code",
                json={"client_id": "<script>alert(1)</script>", "scope": "a&b"},
            ) as resp:
                code = await resp.json()
            page = f"{live.url}/device?user_code={code['user_code']}"
            # Signed out: a pointer to the start-up link, and the way back.
            async with http.get(page) as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
                assert resp.headers["Cache-Control"] == "no-store"
                assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
                html = await resp.text()
                assert "/auth/local" in html and code["user_code"] in html
            # Sign in with the start-up link, then come back.
            url = link_in(events, capsys.readouterr().err)
            assert url is not None
            path = urlsplit(url)
            async with http.get(
                f"{live.url}{path.path}?{path.query}", allow_redirects=False
            ) as resp:
                jar = {k: m.value for k, m in set_cookies(resp).items()}
            cookies = cookie_header(jar)
            async with http.get(live.url + "/device", headers=cookies) as resp:
                assert 'name="user_code"' in await resp.text()
            async with http.get(page, headers=cookies) as resp:
                html = await resp.text()
            assert "<script>alert(1)</script>" not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
            assert "a&amp;b" in html
            assert "unverified client" in html and "Cero CLI" not in html
            # When and from where the code was asked for (the peer: no trusted proxy here).
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time> \(just now\)", html), html
            assert "<dt>From address</dt><dd>127.0.0.1</dd>" in html
            assert 'value="approve"' in html and 'value="deny"' in html

            form = {"user_code": code["user_code"], "action": "approve"}
            # The buttons' POST without a same-origin Origin is refused (CSRF).
            async with http.post(live.url + "/device", data=form, headers=cookies) as resp:
                assert resp.status == 403
                assert resp.content_type == "application/json"
            async with http.post(
                live.url + "/device", data=form, headers={**cookies, "Origin": own}
            ) as resp:
                assert resp.status == 200
                assert "Device approved" in await resp.text()
            async with http.post(
                live.url + "/api/auth/device/token",
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": code["device_code"],
                    "client_id": "<script>alert(1)</script>",
                },
            ) as resp:
                assert resp.status == 200
            # A known client: our fixed name, nothing unverified about it.
            async with http.post(
                live.url + "/api/auth/device/code", json={"client_id": "cero-cli"}
            ) as resp:
                known = await resp.json()
            async with http.get(
                f"{live.url}/device?user_code={known['user_code']}", headers=cookies
            ) as resp:
                html = await resp.text()
            assert "<dd>Cero CLI</dd>" in html and "unverified" not in html
            # A wrong code on the page is an explained page, not an error.
            async with http.get(live.url + "/device?user_code=<b>x</b>", headers=cookies) as resp:
                html = await resp.text()
                assert "Invalid user code" in html and "<b>x</b>" not in html
    finally:
        await ctx.__aexit__(None, None, None)
