"""Device authorization (RFC 8628) over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import structlog

from server.core.device_clients import ANY_CLIENT, KNOWN_CLIENTS
from server.core.ids import token_hash
from server.storage.tables import DeviceCode
from tests.auth_helpers import (
    bearer,
    fresh_ip,
    make_user_session,
    new_code,
    session_cookie,
)
from tests.conftest import Live, live_app, make_settings
from tests.process_stats import refusals

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CODE_RE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"device_poll_interval": 1, "trusted_proxies": ["127.0.0.1/32"]}


async def poll(
    http: aiohttp.ClientSession, live: Live, device_code: str, client_id: str = "cero-cli"
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with http.post(
        live.url + "/api/auth/device/token",
        json={"grant_type": GRANT, "device_code": device_code, "client_id": client_id},
    ) as resp:
        assert resp.headers.get("Cache-Control") == "no-store"
        return resp.status, await resp.json(), resp


async def row(device_code: str) -> dict[str, Any]:
    rows = await DeviceCode.select().where(DeviceCode.device_code_hash == token_hash(device_code))
    return dict(rows[0])


async def rewind_poll_clock(device_code: str, seconds: float = 60) -> None:
    await (
        DeviceCode.update(
            {DeviceCode.last_polled_at: datetime.now(UTC) - timedelta(seconds=seconds)}
        )
        .where(DeviceCode.device_code_hash == token_hash(device_code))
        .run()
    )


async def claim_and(
    http: aiohttp.ClientSession, live: Live, user_code: str, token: str, action: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        live.url + "/api/auth/device",
        params={"user_code": user_code},
        headers={**bearer(token), **fresh_ip()},
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(
        live.url + f"/api/auth/device/{action}",
        json={"userCode": user_code},
        headers={**bearer(token), **fresh_ip()},
    ) as resp:
        return resp.status, await resp.json()


async def test_code_answer_shape_and_storage(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            live.url + "/api/auth/device/code", json={"client_id": "cero-cli", "scope": "openid"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            body = await resp.json()
    assert set(body) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert CODE_RE.match(body["user_code"])
    assert body["verification_uri"] == f"{live.settings.public_url}/device"
    assert body["verification_uri_complete"] == (
        f"{live.settings.public_url}/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 1800 and body["interval"] == 1
    assert len(body["device_code"]) >= 43  # >= 256 bits, URL-safe base64
    stored = await row(body["device_code"])
    assert body["device_code"] not in {str(v) for v in stored.values()}
    assert stored["user_code"] == body["user_code"].replace("-", "")
    assert stored["client_id"] == "cero-cli" and stored["scope"] == "openid"


async def test_code_request_accepts_form_and_rejects_bad_input(live: Live) -> None:
    url = live.url + "/api/auth/device/code"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"client_id": "cero-cli"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["interval"] == 1
        bad: list[dict[str, Any]] = [
            {"json": {}},
            {"json": {"client_id": ""}},
            {"json": {"client_id": 123}},
            {"json": {"client_id": "x", "scope": ["a"]}},
            {"json": ["client_id"]},
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            {
                "data": "client_id=a&client_id=b",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            {"json": {"client_id": "x" * 5000}},
        ]
        for kwargs in bad:
            async with http.post(url, **kwargs) as resp:
                assert resp.status == 400, kwargs
                body = await resp.json()
                assert body["error"] == "invalid_request", (kwargs, body)
                assert body["error_description"]
                assert resp.headers["Cache-Control"] == "no-store"


async def test_only_the_cero_clients_by_default(live: Live) -> None:
    """Issue 20: a client id is the device's own words, so by default only the Cero CLIs'
    ids get a code (an attacker's "Cero official CLI" is refused)."""
    assert live.settings.device_client_ids == list(KNOWN_CLIENTS)
    url = live.url + "/api/auth/device/code"
    async with aiohttp.ClientSession() as http:
        for client_id in ("Cero official CLI", "someone-else", "*"):
            async with http.post(url, json={"client_id": client_id}, headers=fresh_ip()) as resp:
                assert resp.status == 400
                body = await resp.json()
                assert body["error"] == "invalid_client", body
                assert resp.headers["Cache-Control"] == "no-store"
        for client_id in KNOWN_CLIENTS:
            async with http.post(url, json={"client_id": client_id}, headers=fresh_ip()) as resp:
                assert resp.status == 200, await resp.text()
    # An empty setting is the default, not "anything"; "*" is the explicit opt-out.
    url_ = live.settings.database_url
    assert make_settings(url_, device_client_ids="").device_client_ids == list(KNOWN_CLIENTS)
    assert make_settings(url_, device_client_ids=" * ").device_client_ids == [ANY_CLIENT]


async def test_claim_answer_says_who_asked_when_and_from_where(live: Live) -> None:
    token, _ = await make_user_session("Hopper", "hopper@example.test")
    asker = fresh_ip()
    async with aiohttp.ClientSession() as http:
        before = datetime.now(UTC)
        async with http.post(
            live.url + "/api/auth/device/code", json={"client_id": "cero-cli"}, headers=asker
        ) as resp:
            assert resp.status == 200
            code = await resp.json()
        async with http.get(
            live.url + "/api/auth/device", params={"user_code": code["user_code"]}
        ) as resp:
            anonymous = await resp.json()
        assert set(anonymous) == {"user_code", "status"}  # nothing for a signed-out caller
        async with http.get(
            live.url + "/api/auth/device",
            params={"user_code": code["user_code"]},
            headers={**bearer(token), **fresh_ip()},
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["client_id"] == "cero-cli"
    assert body["clientName"] == "Cero CLI" and body["verified"] is True
    assert body["requestedFrom"] == asker["X-Forwarded-For"]
    # The contract's timestamp form (milliseconds, Z), like every other timestamp.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["requestedAt"])
    requested = datetime.fromisoformat(body["requestedAt"])
    assert before - timedelta(seconds=1) <= requested <= datetime.now(UTC)


async def test_any_client_opt_out_marks_it_unverified(live: Live) -> None:
    token, _ = await make_user_session("Liskov", "liskov@example.test")
    async with (
        live_app(live.settings.database_url, device_client_ids=["*"]) as other,
        aiohttp.ClientSession() as http,
    ):
        code = await new_code(http, other, client_id="Cero official CLI")
        async with http.get(
            other.url + "/api/auth/device",
            params={"user_code": code["user_code"]},
            headers=bearer(token),
        ) as resp:
            body = await resp.json()
        assert body["client_id"] == "Cero official CLI"
        assert body["verified"] is False and body["clientName"] is None
        assert body["requestedFrom"] == "127.0.0.1"


async def test_unknown_client_id_is_invalid_client(live: Live) -> None:
    async with (
        live_app(live.settings.database_url, device_client_ids=["cero-cli"]) as other,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(
            other.url + "/api/auth/device/code", json={"client_id": "someone-else"}
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_client"
        async with http.post(
            other.url + "/api/auth/device/code", json={"client_id": "cero-cli"}
        ) as resp:
            assert resp.status == 200


async def test_pending_slow_down_approve_token_whoami(live: Live) -> None:
    token, user_id = await make_user_session("Grace", "grace@example.test")
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        dc = code["device_code"]
        status, body, _ = await poll(http, live, dc)
        assert (status, body["error"]) == (400, "authorization_pending")
        first_poll = (await row(dc))["last_polled_at"]
        assert first_poll is not None

        # Polled again at once: slow_down, interval + 5 for good, the clock does not move.
        status, body, _ = await poll(http, live, dc)
        assert (status, body["error"]) == (400, "slow_down")
        stored = await row(dc)
        assert stored["interval"] == 6
        assert stored["last_polled_at"] == first_poll
        status, body, _ = await poll(http, live, dc)
        assert body["error"] == "slow_down"
        assert (await row(dc))["interval"] == 11

        # Waiting 1 s (the original interval) is no longer enough.
        await rewind_poll_clock(dc, seconds=2)
        status, body, _ = await poll(http, live, dc)
        assert body["error"] == "slow_down"
        assert (await row(dc))["interval"] == 16

        await rewind_poll_clock(dc, seconds=30)
        status, body, _ = await poll(http, live, dc)
        assert body["error"] == "authorization_pending"

        assert await claim_and(http, live, code["user_code"], token, "approve") == (
            200,
            {"success": True},
        )
        await rewind_poll_clock(dc, seconds=30)
        status, body, resp = await poll(http, live, dc)
        assert status == 200, body
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "openid"
        assert 604000 <= body["expires_in"] <= 604800
        assert resp.headers["set-auth-token"] == body["access_token"]
        assert body["access_token"] != token  # a new session, not the approver's

        async with http.get(
            live.url + "/api/user/whoami", headers=bearer(body["access_token"])
        ) as who:
            assert who.status == 200
            assert await who.json() == {
                "user": {
                    "id": user_id,
                    "name": "Grace",
                    "email": "grace@example.test",
                    "image": None,
                }
            }


async def test_form_encoded_token_request(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        async with http.post(
            live.url + "/api/auth/device/token",
            data={"grant_type": GRANT, "device_code": code["device_code"], "client_id": "cero-cli"},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "authorization_pending"


async def test_deny_gives_access_denied(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        assert await claim_and(http, live, code["user_code"], token, "deny") == (
            200,
            {"success": True},
        )
        status, body, _ = await poll(http, live, code["device_code"])
        assert (status, body["error"]) == (400, "access_denied")


async def test_expired_code(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        await (
            DeviceCode.update({DeviceCode.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
            .where(DeviceCode.device_code_hash == token_hash(code["device_code"]))
            .run()
        )
        status, body, _ = await poll(http, live, code["device_code"])
        assert (status, body["error"]) == (400, "expired_token")
        async with http.get(
            live.url + "/api/auth/device",
            params={"user_code": code["user_code"]},
            headers={**bearer(token), **fresh_ip()},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "expired_token"
        async with http.post(
            live.url + "/api/auth/device/approve",
            json={"userCode": code["user_code"]},
            headers={**bearer(token), **fresh_ip()},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "expired_token"


async def test_redeemed_unknown_and_mismatched_codes_are_invalid_grant(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        await claim_and(http, live, code["user_code"], token, "approve")
        status, body, _ = await poll(http, live, code["device_code"], client_id="other-client")
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body, _ = await poll(http, live, code["device_code"])
        assert status == 200
        status, body, _ = await poll(http, live, code["device_code"])
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body, _ = await poll(http, live, "no-such-device-code")
        assert (status, body["error"]) == (400, "invalid_grant")
        # A redeemed code is no longer live for the verification side either.
        async with http.get(
            live.url + "/api/auth/device",
            params={"user_code": code["user_code"]},
            headers=fresh_ip(),
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_request"


async def test_concurrent_redemption_gives_exactly_one_token(live: Live) -> None:
    token, _ = await make_user_session()
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        await claim_and(http, live, code["user_code"], token, "approve")
        results = await asyncio.gather(*(poll(http, live, code["device_code"]) for _ in range(5)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 400, 400, 400, 400], results
    for status, body, _ in results:
        if status == 400:
            assert body["error"] in ("invalid_grant", "slow_down")


async def test_only_the_claimer_may_decide(live: Live) -> None:
    alice, _ = await make_user_session("Alice")
    bob, _ = await make_user_session("Bob")
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live, client_id="cero-cli", scope="chat")
        lookup = live.url + "/api/auth/device"
        async with http.get(
            lookup, params={"user_code": code["user_code"]}, headers={**bearer(alice), **fresh_ip()}
        ) as resp:
            claimed = await resp.json()
            assert {k: claimed.pop(k) for k in ("requestedAt", "requestedFrom")}
            assert claimed == {
                "user_code": code["user_code"],
                "status": "pending",
                "client_id": "cero-cli",
                "scope": "chat",
                "clientName": "Cero CLI",
                "verified": True,
            }
        # Anonymous and other users see the status only.
        async with http.get(lookup, params={"user_code": code["user_code"]}) as resp:
            assert await resp.json() == {"user_code": code["user_code"], "status": "pending"}
        async with http.get(
            lookup, params={"user_code": code["user_code"]}, headers={**bearer(bob), **fresh_ip()}
        ) as resp:
            assert await resp.json() == {"user_code": code["user_code"], "status": "pending"}
        for action in ("approve", "deny"):
            async with http.post(
                live.url + f"/api/auth/device/{action}",
                json={"userCode": code["user_code"]},
                headers={**bearer(bob), **fresh_ip()},
            ) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"] == "access_denied"
        # Lower case, spaces, no dash: the same code.
        messy = " " + code["user_code"].lower().replace("-", " ") + " "
        async with http.post(
            live.url + "/api/auth/device/approve",
            json={"userCode": messy},
            headers={**bearer(alice), **fresh_ip()},
        ) as resp:
            assert resp.status == 200
        async with http.post(
            live.url + "/api/auth/device/deny",
            json={"userCode": code["user_code"]},
            headers={**bearer(alice), **fresh_ip()},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_request"
        async with http.get(
            lookup, params={"user_code": code["user_code"]}, headers=fresh_ip()
        ) as resp:
            assert (await resp.json())["status"] == "approved"


async def test_deciding_an_unclaimed_code_claims_it(live: Live) -> None:
    alice, _ = await make_user_session("Alice")
    bob, _ = await make_user_session("Bob")
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        async with http.post(
            live.url + "/api/auth/device/approve",
            json={"userCode": code["user_code"]},
            headers={**bearer(alice), **fresh_ip()},
        ) as resp:
            assert resp.status == 200
        async with http.post(
            live.url + "/api/auth/device/deny",
            json={"userCode": code["user_code"]},
            headers={**bearer(bob), **fresh_ip()},
        ) as resp:
            assert resp.status == 400  # already decided
        status, body, _ = await poll(http, live, code["device_code"])
        assert status == 200
        async with http.get(
            live.url + "/api/user/whoami", headers=bearer(body["access_token"])
        ) as resp:
            assert (await resp.json())["user"]["name"] == "Alice"


async def test_decisions_need_a_signed_in_user(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        for action in ("approve", "deny"):
            async with http.post(
                live.url + f"/api/auth/device/{action}", json={"userCode": code["user_code"]}
            ) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert body["error"] == "unauthorized" and body["error_description"]
                assert resp.headers["Cache-Control"] == "no-store"
            async with http.post(
                live.url + f"/api/auth/device/{action}",
                json={"userCode": code["user_code"]},
                headers=bearer("not-a-token"),
            ) as resp:
                assert resp.status == 401


async def test_cookie_approval_needs_a_trusted_origin(live: Live) -> None:
    token, _ = await make_user_session()
    cookie = session_cookie(live.settings, token)
    own = live.settings.public_url
    async with aiohttp.ClientSession() as http:
        code = await new_code(http, live)
        url = live.url + "/api/auth/device/approve"
        for headers in (
            {},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Referer": "https://evil.example/device"},
        ):
            async with http.post(
                url, json={"userCode": code["user_code"]}, headers={**cookie, **headers}
            ) as resp:
                assert resp.status == 403, headers
                body = await resp.json()
                assert body["error"] == "invalid_origin" and body["error_description"]
        async with http.get(
            live.url + "/api/auth/device", params={"user_code": code["user_code"]}
        ) as resp:
            assert (await resp.json())["status"] == "pending"  # nothing happened
        async with http.post(
            url,
            json={"userCode": code["user_code"]},
            headers={**cookie, "Referer": own + "/device?user_code=x", **fresh_ip()},
        ) as resp:
            assert resp.status == 200
        other = await new_code(http, live)
        async with http.post(
            url, json={"userCode": other["user_code"]}, headers={**cookie, "Origin": own}
        ) as resp:
            assert resp.status == 200


async def test_token_request_bad_input(live: Live) -> None:
    url = live.url + "/api/auth/device/token"
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"json": {"grant_type": "password", "device_code": "x", "client_id": "c"}},
            "unsupported_grant_type",
        ),
        ({"json": {"device_code": "x", "client_id": "c"}}, "invalid_request"),
        ({"json": {"grant_type": GRANT, "client_id": "c"}}, "invalid_request"),
        ({"json": {"grant_type": GRANT, "device_code": "x"}}, "invalid_request"),
        ({"json": {"grant_type": GRANT, "device_code": 42, "client_id": "c"}}, "invalid_request"),
        (
            {"json": {"grant_type": GRANT, "device_code": "x" * 10_000, "client_id": "c"}},
            "invalid_request",
        ),
        ({"json": ["x"]}, "invalid_request"),
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, "invalid_request"),
        ({"data": {"grant_type": "urn:other"}}, "unsupported_grant_type"),
    ]
    async with aiohttp.ClientSession() as http:
        for kwargs, error in cases:
            async with http.post(url, **kwargs) as resp:
                assert resp.status == 400, kwargs
                body = await resp.json()
                assert body["error"] == error, (kwargs, body)
                assert isinstance(body["error_description"], str)


async def test_lookup_bad_input(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        for params in ({}, {"user_code": "BCDF-GHJK"}, {"user_code": "B" * 2000}):
            async with http.get(
                live.url + "/api/auth/device", params=params, headers=fresh_ip()
            ) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == "invalid_request"
        token, _ = await make_user_session()
        for body in ({}, {"userCode": 12}, {"userCode": "Z" * 5000}, {"userCode": None}):
            async with http.post(
                live.url + "/api/auth/device/approve",
                json=body,
                headers={**bearer(token), **fresh_ip()},
            ) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"] == "invalid_request"


async def test_sixth_wrong_code_is_rate_limited(live: Live) -> None:
    token, _ = await make_user_session()
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        good = await new_code(http, live)
        wrong = ["BCDF-GHJK", "bcdf-ghjz", "nonsense", "ZZZZ-ZZZZ", "X" * 500]
        for i, user_code in enumerate(wrong):
            method = http.get if i % 2 == 0 else http.post
            if method is http.get:
                ctx = http.get(
                    live.url + "/api/auth/device", params={"user_code": user_code}, headers=ip
                )
            else:
                ctx = http.post(
                    live.url + "/api/auth/device/approve",
                    json={"userCode": user_code},
                    headers={**bearer(token), **ip},
                )
            async with ctx as resp:
                assert resp.status == 400, (i, await resp.text())
        refused = await refusals(http, live.url, "wrong_codes")
        # The sixth lookup is refused, even for a good code.
        async with http.get(
            live.url + "/api/auth/device", params={"user_code": good["user_code"]}, headers=ip
        ) as resp:
            assert resp.status == 429
            body = await resp.json()
            assert body["error"] == "rate_limited" and body["error_description"]
            assert 0 < int(resp.headers["Retry-After"]) <= 600
        async with http.post(
            live.url + "/api/auth/device/approve",
            json={"userCode": good["user_code"]},
            headers={**bearer(token), **ip},
        ) as resp:
            assert resp.status == 429
        assert await refusals(http, live.url, "wrong_codes") == refused + 2  # /metrics counts both
        # Another client address is unaffected; X-Forwarded-For counts only because the
        # peer (127.0.0.1) is a trusted proxy in this app's settings.
        async with http.get(
            live.url + "/api/auth/device",
            params={"user_code": good["user_code"]},
            headers=fresh_ip(),
        ) as resp:
            assert resp.status == 200


async def test_untrusted_forwarded_for_is_ignored(live: Live) -> None:
    async with live_app(live.settings.database_url) as other, aiohttp.ClientSession() as http:
        for n in range(5):
            async with http.get(
                other.url + "/api/auth/device",
                params={"user_code": "BCDF-GHJK"},
                headers={"X-Forwarded-For": f"10.9.9.{n}"},
            ) as resp:
                assert resp.status == 400
        async with http.get(
            other.url + "/api/auth/device",
            params={"user_code": "BCDF-GHJK"},
            headers={"X-Forwarded-For": "10.9.9.99"},
        ) as resp:
            assert resp.status == 429  # all five counted against the peer, 127.0.0.1


async def test_no_secrets_in_logs(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = await make_user_session()
    with structlog.testing.capture_logs() as events:
        async with aiohttp.ClientSession() as http:
            code = await new_code(http, live)
            await poll(http, live, code["device_code"])
            await claim_and(http, live, code["user_code"], token, "approve")
            await rewind_poll_clock(code["device_code"])
            status, body, _ = await poll(http, live, code["device_code"])
            assert status == 200
            access = body["access_token"]
            async with http.get(live.url + "/api/user/whoami", headers=bearer(access)) as r:
                assert r.status == 200
            async with http.get(
                live.url + "/api/auth/get-session", headers=session_cookie(live.settings, access)
            ) as r:
                assert r.status == 200
            async with http.post(live.url + "/api/auth/sign-out", headers=bearer(access)) as r:
                assert r.status == 200
    assert events, "expected some log events"
    names = {e.get("event") for e in events}
    assert {"device_code_issued", "device_approved", "device_token_issued"} <= names
    text = repr(events) + "\n" + caplog.text
    for secret in (
        access,
        code["device_code"],
        token,
        session_cookie(live.settings, access)["Cookie"],
    ):
        assert secret not in text
