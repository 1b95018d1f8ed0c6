"""Device-flow limits found by the outside probe (issue 15, bugs 6 and 11), over real HTTP.

- parallel lookups of a good user code from one IP all succeed: only codes decided wrong
  count toward the 5-in-10-minutes limit, and parallel wrong guesses still get no more
  than 5 tries;
- anonymous ``POST /api/auth/device/code`` is limited per IP (``429`` in the OAuth shape
  with ``Retry-After``), ``client_id`` and ``scope`` are short, and expired codes are purged
  by a periodic task;
- meanwhile another client's ``/healthz`` and a short chat are served.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from actors.clock import utcnow
from server.auth import device_flow
from server.core.ids import new_id, token_hash
from server.storage.tables import DeviceCode
from tests.auth_helpers import bearer, fresh_ip, make_user_session
from tests.conditions import until
from tests.conftest import Live

CODE_LIMIT = 6


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """This module's app (conftest's ``live``): its limits set low enough to reach."""
    return {
        "trusted_proxies": ["127.0.0.1/32"],
        "device_code_limit": CODE_LIMIT,
        "device_client_ids": ["*"],  # any id: the bounds on its length are tested here
        "device_purge_interval": 0.2,
    }


async def _issue(http: aiohttp.ClientSession, live: Live, ip: dict[str, str]) -> dict[str, Any]:
    async with http.post(
        live.url + "/api/auth/device/code",
        json={"client_id": "cero-cli", "scope": "openid"},
        headers=ip,
    ) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def _others_are_served(http: aiohttp.ClientSession, live: Live) -> None:
    """Another client: ``/healthz`` answers and a short demo chat completes."""
    async with http.get(live.url + "/healthz", headers=fresh_ip()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    token, _ = await make_user_session("Other")
    async with http.post(
        live.url + "/api/chat",
        json={"message": "still there?", "aiModel": "demo"},
        headers=bearer(token),
    ) as resp:
        assert resp.status == 200, await resp.text()
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
    assert lines[-1]["topic"] == "done", lines[-1]


# -- bug 6: lookups in progress are not wrong codes ---------------------------------------


async def test_parallel_lookups_of_a_good_code_all_succeed(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        code = await _issue(http, live, fresh_ip())
        ip = fresh_ip()

        async def look() -> int:
            async with http.get(
                live.url + "/api/auth/device", params={"user_code": code["user_code"]}, headers=ip
            ) as resp:
                return resp.status

        for _ in range(3):  # a few rounds: the race needs lookups to overlap
            statuses = await asyncio.gather(*(look() for _ in range(8)))
            assert statuses == [200] * 8, statuses
        await _others_are_served(http, live)


async def test_parallel_good_and_wrong_lookups_limit_only_the_wrong(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        code = await _issue(http, live, fresh_ip())
        ip = fresh_ip()

        async def look(user_code: str) -> tuple[int, dict[str, Any]]:
            async with http.get(
                live.url + "/api/auth/device", params={"user_code": user_code}, headers=ip
            ) as resp:
                return resp.status, await resp.json()

        wrong = ["".join("BCDFGHJKLMNPQRSTVWXZ"[(n + i) % 20] for i in range(8)) for n in range(12)]
        answers = await asyncio.gather(*(look(c) for c in wrong))
        statuses = sorted(status for status, _ in answers)
        assert statuses.count(400) <= 5 and set(statuses) <= {400, 429}, statuses
        limited = [body for status, body in answers if status == 429]
        assert limited and all(body["error"] == "rate_limited" for body in limited)
        assert all(body["retryAfter"] > 0 for body in limited)  # CONTRACT.md: every 429
        # Five decided wrong: now even the good code is refused from that IP ...
        status, body = await look(code["user_code"])
        assert status == 429 and body["error"] == "rate_limited"
        # ... but not from another one.
        async with http.get(
            live.url + "/api/auth/device",
            params={"user_code": code["user_code"]},
            headers=fresh_ip(),
        ) as resp:
            assert resp.status == 200


# -- bug 11: anonymous device codes are bounded --------------------------------------------


async def test_device_codes_are_limited_per_ip(live: Live) -> None:
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(CODE_LIMIT + 4):
            async with http.post(
                live.url + "/api/auth/device/code",
                json={"client_id": "cero-cli", "scope": "openid"},
                headers=ip,
            ) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    body = await resp.json()
                    assert body["error"] == "rate_limited" and body["error_description"]
                    # The OAuth shape, plus CONTRACT.md's retryAfter on every 429.
                    assert set(body) == {"error", "error_description", "retryAfter"}
                    assert body["retryAfter"] == int(resp.headers["Retry-After"]) > 0
                    assert resp.headers["Cache-Control"] == "no-store"
        assert statuses == [200] * CODE_LIMIT + [429] * 4, statuses
        await _issue(http, live, fresh_ip())  # another IP is not affected
        await _others_are_served(http, live)


async def test_device_code_client_id_and_scope_are_bounded(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        for body in (
            {"client_id": "c" * (device_flow.MAX_CLIENT_ID + 1), "scope": "openid"},
            {"client_id": "cero-cli", "scope": "s" * (device_flow.MAX_SCOPE + 1)},
            {"client_id": "c" * 255, "scope": "s" * 1024},
        ):
            before = await DeviceCode.count().run()
            async with http.post(
                live.url + "/api/auth/device/code", json=body, headers=fresh_ip()
            ) as resp:
                assert resp.status == 400
                answer = await resp.json()
            assert answer["error"] == "invalid_request", answer
            assert await DeviceCode.count().run() == before
        async with http.post(
            live.url + "/api/auth/device/code",
            data={"client_id": "c" * device_flow.MAX_CLIENT_ID, "scope": "s" * 256},
            headers=fresh_ip(),
        ) as resp:
            assert resp.status == 200


async def test_expired_device_codes_are_purged_promptly(live: Live) -> None:
    now = utcnow()
    rows = {}
    for name, expires in (
        ("long_gone", now - device_flow.PURGE_GRACE - timedelta(minutes=1)),
        ("just_expired", now - timedelta(seconds=5)),  # still answers expired_token
        ("live", now + timedelta(minutes=10)),
    ):
        rows[name] = new_id()
        await DeviceCode.insert(
            DeviceCode(
                id=rows[name],
                device_code_hash=token_hash(new_id()),
                user_code=device_flow.new_user_code(),
                status="pending",
                client_id="cero-cli",
                scope="",
                interval=5,
                last_polled_at=None,
                expires_at=expires,
                created_at=expires - timedelta(minutes=30),
            )
        ).run()

    async def exists(name: str) -> bool:
        return bool(await DeviceCode.exists().where(DeviceCode.id == rows[name]).run())

    async def purged() -> bool:
        return not await exists("long_gone")

    await until(purged, 5)  # the purge runs every 0.2 s here
    assert await exists("just_expired") and await exists("live")
