"""Regression tests of the sign-in security review, over real HTTP and raw sockets.

- parallel wrong user codes from one IP are rate limited like sequential ones;
- header bytes that are not UTF-8 (bearer, cookie, WebSocket subprotocol, User-Agent,
  X-Forwarded-For) are an invalid credential or harmless text, never a 500;
- malformed form bodies are 400, never a 500;
- the /device page answers a rate-limited lookup with 429 and Retry-After;
- IPv6 clients are counted per /64, IPv4-mapped addresses match IPv4 proxies;
- the generated secret file is created owner-only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from server.core.client_ip import _trusted
from server.core.config import load_settings
from server.limits.rate_limit import rate_key
from tests.auth_helpers import (
    bearer,
    fresh_ip,
    make_user_session,
    new_code,
    raw_http,
    session_cookie,
)
from tests.conftest import Live

# Async tests run on the module loop (asyncio_default_test_loop_scope in pyproject.toml).

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"device_poll_interval": 1, "trusted_proxies": ["127.0.0.1/32"]}


# -- 1. parallel wrong codes ---------------------------------------------------------------


async def test_parallel_wrong_codes_are_rate_limited(live: Live) -> None:
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:

        async def guess(n: int) -> tuple[int, str | None]:
            code = "".join("BCDFGHJKLMNPQRSTVWXZ"[(n + i) % 20] for i in range(8))
            async with http.get(
                live.url + "/api/auth/device", params={"user_code": code}, headers=ip
            ) as resp:
                return resp.status, resp.headers.get("Retry-After")

        answers = await asyncio.gather(*(guess(n) for n in range(30)))
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {400, 429}, statuses
        assert sum(1 for s in statuses if s != 429) <= 5, statuses
        assert all(int(retry or 0) > 0 for status, retry in answers if status == 429)
        # And the limit holds afterwards, even for a good code.
        good = await new_code(http, live)
        async with http.get(
            live.url + "/api/auth/device", params={"user_code": good["user_code"]}, headers=ip
        ) as resp:
            assert resp.status == 429
            assert (await resp.json())["retryAfter"] == int(resp.headers["Retry-After"]) > 0
        # A good code does not use up the budget: its slot is given back.
        other = fresh_ip()
        for _ in range(8):
            async with http.get(
                live.url + "/api/auth/device",
                params={"user_code": good["user_code"]},
                headers=other,
            ) as resp:
                assert resp.status == 200


# -- 2. non-UTF-8 header bytes ----------------------------------------------------------------


async def test_non_utf8_bearer_is_unauthorized(live: Live) -> None:
    for value in (b"\xff\xfe", b"abc\xff.def", b"\xc3\x28" * 10):
        status, _, body = await raw_http(
            live.url, b"GET /api/user/whoami HTTP/1.1\r\nAuthorization: Bearer " + value
        )
        assert status == 401, (value, body)
        assert orjson.loads(body) == {"error": "Unauthorized", "code": "unauthorized"}
        status, _, body = await raw_http(
            live.url, b"GET /api/auth/get-session HTTP/1.1\r\nAuthorization: Bearer " + value
        )
        assert status == 200 and orjson.loads(body) is None
    # Shaped like a token but longer than any: invalid, not an error.
    status, _, _ = await raw_http(
        live.url, b"GET /api/user/whoami HTTP/1.1\r\nAuthorization: Bearer " + b"a" * 600
    )
    assert status == 401


async def test_non_utf8_cookie_is_anonymous(live: Live) -> None:
    sig = b"A" * 43 + b"="
    for cookie in (
        b"better-auth.session_token=\xff." + sig,
        b"better-auth.session_token=abc\xfe%FF." + sig,
        b"better-auth.session_token=abc." + sig + b"; better-auth.session_data=\xff\xfe",
    ):
        status, _, body = await raw_http(
            live.url, b"GET /api/user/whoami HTTP/1.1\r\nCookie: " + cookie
        )
        assert status == 401, (cookie, body)
        status, _, body = await raw_http(
            live.url, b"GET /api/auth/get-session HTTP/1.1\r\nCookie: " + cookie
        )
        assert status == 200 and orjson.loads(body) is None
    # A good session cookie with a garbage cache cookie still works (from the database).
    token, _ = await make_user_session()
    good = session_cookie(live.settings, token)["Cookie"].encode()
    status, _, body = await raw_http(
        live.url,
        b"GET /api/user/whoami HTTP/1.1\r\nCookie: "
        + good
        + b"; better-auth.session_data=\xff\xfe",
    )
    assert status == 200, body
    # The GitHub state cookie, too.
    status, _, _ = await raw_http(
        live.url,
        b"GET /api/auth/callback/github?code=x&state=\xff HTTP/1.1\r\n"
        b"Cookie: better-auth.state=\xff\xfe",
    )
    assert status < 500


async def test_non_utf8_websocket_subprotocol_is_unauthorized(live: Live) -> None:
    for proto in (b"bearer.\xff", b"cero.v1, bearer.\xff\xfe"):
        status, _, body = await raw_http(
            live.url,
            b"GET /api/ws HTTP/1.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Protocol: " + proto,
        )
        assert status == 401, (proto, body)
    status, _, _ = await raw_http(
        live.url,
        b"GET /api/ws?token=%FF%FE HTTP/1.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    assert status == 401


async def test_non_utf8_user_agent_and_forwarded_for_are_stored_clean(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        async with http.post(
            live.url + "/api/auth/device/approve",
            json={"userCode": code["user_code"]},
            headers={**bearer(token), **fresh_ip()},
        ) as resp:
            assert resp.status == 200
    body = f"grant_type={GRANT}&device_code={code['device_code']}&client_id=cero-cli".encode()
    status, _, answer = await raw_http(
        live.url,
        b"POST /api/auth/device/token HTTP/1.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"User-Agent: \xff\xfe agent" + b"x" * 1000 + b"\r\n"
        b"X-Forwarded-For: 10.0.0.\xff",
        body,
    )
    assert status == 200, answer
    access = orjson.loads(answer)["access_token"]
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/api/auth/list-sessions", headers=bearer(access)) as r:
            assert r.status == 200
            (mine,) = [s for s in await r.json() if s["current"]]
    agent = mine["userAgent"]
    assert agent.startswith("?? agent") and len(agent) == 512
    assert mine["ipAddress"] == "10.0.0.?"
    # A wrong code from such an address is counted and logged, not a crash.
    status, _, _ = await raw_http(
        live.url,
        b"GET /api/auth/device?user_code=BCDF-GHJK HTTP/1.1\r\nX-Forwarded-For: \xff\xfe",
    )
    assert status == 400


# -- 3. malformed form bodies -----------------------------------------------------------------

MALFORMED_FORMS: list[tuple[str, bytes]] = [
    ("application/x-www-form-urlencoded; charset=nope", b"client_id=cero-cli"),
    ("application/x-www-form-urlencoded", b"client_id=\xff\xfe"),
    ("multipart/form-data", b"--x\r\n\r\nclient_id\r\n--x--\r\n"),
    ("multipart/form-data; boundary=abc", b"client_id=cero-cli"),
    (
        "multipart/form-data; boundary=abc",
        b'--abc\r\nContent-Disposition: form-data; name="client_id"\r\n'
        b"Content-Type: text/plain; charset=nope\r\n\r\ncero-cli\r\n--abc--\r\n",
    ),
    (
        "multipart/form-data; boundary=abc",
        b'--abc\r\nContent-Disposition: form-data; name="client_id"\r\n'
        b"Content-Transfer-Encoding: rot13\r\n\r\ncero-cli\r\n--abc--\r\n",
    ),
]


async def test_malformed_form_bodies_are_400(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        for content_type, data in MALFORMED_FORMS:
            for path, headers in (
                ("/api/auth/device/code", {}),
                ("/api/auth/device/token", {}),
                ("/api/auth/device/approve", {**bearer(token), **fresh_ip()}),
            ):
                async with http.post(
                    live.url + path,
                    data=data,
                    headers={"Content-Type": content_type, **headers},
                ) as resp:
                    assert resp.status == 400, (path, content_type, await resp.text())
                    body = await resp.json()
                    assert body["error"] == "invalid_request", body
            async with http.post(
                live.url + "/device",
                data=data,
                headers={"Content-Type": content_type, "Origin": live.settings.public_url},
            ) as resp:
                assert resp.status == 400, (content_type, await resp.text())
                assert resp.content_type == "text/html"
                assert "Malformed form body" in await resp.text()
        # A good form still works.
        async with http.post(
            live.url + "/api/auth/device/code", data={"client_id": "cero-cli"}
        ) as resp:
            assert resp.status == 200


# -- 5. the /device page under the rate limit -------------------------------------------------


async def test_device_page_answers_rate_limit_with_429(live: Live) -> None:
    token, _ = await make_user_session()
    cookies = session_cookie(live.settings, token)
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        good = await new_code(http, live)
        for _ in range(5):
            async with http.get(
                live.url + "/device", params={"user_code": "ZZZZ-ZZZZ"}, headers={**cookies, **ip}
            ) as resp:
                assert resp.status == 200
        async with http.get(
            live.url + "/device", params={"user_code": good["user_code"]}, headers={**cookies, **ip}
        ) as resp:
            assert resp.status == 429
            assert resp.content_type == "text/html"
            assert 0 < int(resp.headers["Retry-After"]) <= 600
            assert "Too many wrong codes" in await resp.text()
        async with http.post(
            live.url + "/device",
            data={"user_code": good["user_code"], "action": "approve"},
            headers={**cookies, **ip, "Origin": live.settings.public_url},
        ) as resp:
            assert resp.status == 429
            assert 0 < int(resp.headers["Retry-After"]) <= 600


# -- 6. client address keying -----------------------------------------------------------------


def test_rate_key_groups_ipv6_by_64_and_unwraps_mapped_ipv4() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert rate_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("::ffff:10.0.0.1") == rate_key("10.0.0.1") == "10.0.0.1"
    assert rate_key("10.0.0.1") != rate_key("10.0.0.2")
    assert rate_key("not an address") == "not an address"


def test_trusted_proxies_match_ipv4_mapped_peers() -> None:
    v4 = (ipaddress.ip_network("127.0.0.1/32"),)
    assert _trusted("::ffff:127.0.0.1", v4)
    assert _trusted("127.0.0.1", v4)
    assert not _trusted("::ffff:127.0.0.2", v4)
    mapped = (ipaddress.ip_network("::ffff:10.0.0.0/104"),)
    assert _trusted("::ffff:10.1.2.3", mapped)
    assert not _trusted("junk", v4)


# -- 8. the generated secret file -------------------------------------------------------------


def test_generated_secret_file_is_owner_only_and_reused(tmp_path: Path) -> None:
    db = tmp_path / "data" / "cero.db"
    old = os.umask(0)
    try:
        settings = load_settings(env_file=None, database_url=f"sqlite:///{db}")
        secret = settings.auth_secret
    finally:
        os.umask(old)
    path = db.parent / ".cero-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret and len(secret) >= 32
    again = load_settings(env_file=None, database_url=f"sqlite:///{db}")
    assert again.auth_secret == secret
    # A file too short to be a secret is replaced, as before.
    path.write_text("short\n")
    third = load_settings(env_file=None, database_url=f"sqlite:///{db}")
    assert third.auth_secret != "short" and len(third.auth_secret) >= 32
    assert path.read_text().strip() == third.auth_secret
