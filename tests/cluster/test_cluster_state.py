"""Cluster mode's shared state (issue 11): two apps on real ports, one PostgreSQL database and
the shared Redis (a key prefix of their own), behave as one process for revocations, the
GitHub sign-in state, the device flow's limits and the per-user chat limits. And Redis
faults: with a private ``redis-server`` stopped and started again, ``/readyz`` and sends
answer ``503 not_ready`` while it is down and recover without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as redis

from cluster.state.stream_limits import RedisStreamLimits
from cluster.state.user_limits import RedisUserLimits
from server.core.app_keys import REDIS, REDIS_HEALTH
from server.limits.stream_limits import STREAM_LIMITS
from server.limits.user_limits import USER_LIMITS
from server.storage.chat_store import create_conversation
from standins.gemini import FakeGemini, Script
from standins.github import FakeGitHub
from state.errors import Refused
from tests.auth_helpers import (
    bearer,
    codec,
    cookie_header,
    fresh_ip,
    make_user_session,
    running,
    session_cookie,
    set_cookies,
)
from tests.cluster_harness import PrivateRedis, require_redis
from tests.conditions import until
from tests.conftest import Live, make_settings, start_live
from tests.live_clients import WsPeer
from tests.process_stats import METRICS_AUTH

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.postgres]

SHARED_REDIS = "redis://127.0.0.1:6379/0"
PUBLIC_URL = "http://cero.test"  # what the load balancer serves: the same for A and B
CLIENT_ID = "Iv1.cero-cluster"
CLIENT_SECRET = "gh-secret-cluster"
MAX_GENERATIONS = 2
NEW_PER_HOUR = 3
DEVICE_CODE_LIMIT = 3
SENDS_PER_MINUTE = 5
STREAMS_PER_USER = 3
STREAMS_PER_IP = 4
SIGN_IN_LIMIT = 4
STALLING = Script(chunks=["Hold ", "on"], stall_after=1, stall_seconds=60)


@dataclass
class Cluster:
    a: Live
    b: Live
    gh: FakeGitHub
    prefix: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(postgres_url: str) -> AsyncIterator[Cluster]:
    await require_redis()
    prefix = f"cero-test-{secrets.token_hex(6)}:"
    gh = FakeGitHub(CLIENT_ID, CLIENT_SECRET)
    await gh.start()
    gh.registered_redirect_uri = f"{PUBLIC_URL}/api/auth/callback/github"
    fake = FakeGemini(default_script=STALLING)
    gemini_url = await fake.start()

    def settings(port: int) -> Any:
        return make_settings(
            postgres_url,
            port=port,
            redis_url=SHARED_REDIS,
            redis_prefix=prefix,
            public_url_setting=PUBLIC_URL,
            trusted_proxies=["127.0.0.1/32"],
            github_client_id=CLIENT_ID,
            github_client_secret=CLIENT_SECRET,
            github_url=gh.web_url,
            github_api_url=gh.api_url,
            gemini_api_key="k",
            gemini_base_url=gemini_url,
            device_code_limit=DEVICE_CODE_LIMIT,
            max_generations_per_user=MAX_GENERATIONS,
            new_conversations_per_hour=NEW_PER_HOUR,
            sends_per_minute=SENDS_PER_MINUTE,
            max_streams_per_user=STREAMS_PER_USER,
            max_streams_per_ip=STREAMS_PER_IP,
            sign_in_limit=SIGN_IN_LIMIT,
            # Sockets of a session revoked elsewhere must end through Redis, not the
            # database re-check (an hour here).
            session_recheck=3600,
        )

    a = await start_live(settings)
    b = await start_live(settings)
    try:
        yield Cluster(a=a, b=b, gh=gh, prefix=prefix)
    finally:
        await b.server.close()
        await a.server.close()
        await fake.stop()
        await gh.stop()
        client = redis.from_url(SHARED_REDIS)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# -- sessions ---------------------------------------------------------------------------------


async def cache_cookie(http: aiohttp.ClientSession, live: Live, token: str) -> dict[str, str]:
    """The session cookie and a fresh cache cookie from ``live``, as a browser holds them."""
    names = codec(live.settings)
    async with http.get(
        live.url + "/api/user/whoami", headers=session_cookie(live.settings, token)
    ) as resp:
        assert resp.status == 200
        cache = set_cookies(resp)[names.cache_name].value
    return {names.session_name: names.session_value(token), names.cache_name: cache}


async def test_a_revocation_on_a_is_refused_on_b_at_once(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    async with aiohttp.ClientSession() as http:
        # Signed out through A: B refuses the cookie (with its cache) and the bearer.
        token, _ = await make_user_session("Signed out")
        jar = await cache_cookie(http, b, token)
        async with http.get(b.url + "/api/user/whoami", headers=cookie_header(jar)) as resp:
            assert resp.status == 200  # the cache is good until the revocation
        peer = WsPeer(await http.ws_connect(b.url + f"/api/ws?token={token}")).start()
        async with http.post(a.url + "/api/auth/sign-out", headers=bearer(token)) as resp:
            assert resp.status == 200
        async with http.get(b.url + "/api/user/whoami", headers=cookie_header(jar)) as resp:
            assert resp.status == 401
        async with http.get(b.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 401
        # B's socket of that session closes through Redis (its database re-check is hourly).
        assert peer._task is not None
        await asyncio.wait_for(peer._task, 5)
        assert peer.close_code == 4001

        # Revoked by id through A (revoke-session) from another of the user's sessions.
        token, user_id = await make_user_session("Revoked")
        jar = await cache_cookie(http, b, token)
        async with http.get(b.url + "/api/auth/get-session", headers=bearer(token)) as resp:
            session_id = (await resp.json())["session"]["id"]
        from server.auth.sessions import SessionStore

        other, _ = await SessionStore().start(user_id)
        async with http.post(
            a.url + "/api/auth/revoke-session", json={"id": session_id}, headers=bearer(other)
        ) as resp:
            assert resp.status == 200
        async with http.get(b.url + "/api/user/whoami", headers=cookie_header(jar)) as resp:
            assert resp.status == 401
        # The other session is untouched, on both.
        for live in (a, b):
            async with http.get(live.url + "/api/user/whoami", headers=bearer(other)) as resp:
                assert resp.status == 200


# -- GitHub sign-in -------------------------------------------------------------------------


async def test_oauth_state_from_a_is_accepted_by_b_once(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    names = codec(a.settings)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            a.url + "/api/auth/sign-in/social",
            json={"provider": "github", "callbackURL": "/after"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            url = (await resp.json())["url"]
            state_cookie = {names.state_name: set_cookies(resp)[names.state_name].value}
        async with http.get(url, allow_redirects=False) as resp:  # at GitHub
            assert resp.status == 302
            location = urlsplit(resp.headers["Location"])
        callback = f"{location.path}?{location.query}"
        async with http.get(
            b.url + callback, headers=cookie_header(state_cookie), allow_redirects=False
        ) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/after", resp.headers
            token = resp.headers["set-auth-token"]
        async with http.get(a.url + "/api/user/whoami", headers=bearer(token)) as resp:
            assert resp.status == 200
        # Replayed through A: the state was spent on B.
        async with http.get(
            a.url + callback, headers=cookie_header(state_cookie), allow_redirects=False
        ) as resp:
            assert resp.status == 302 and "error=state_mismatch" in resp.headers["Location"]
            assert "set-auth-token" not in resp.headers


# -- device flow ------------------------------------------------------------------------------


WRONG_CODES = ["".join("BCDFGHJKLMNPQRSTVWXZ"[(n + i) % 20] for i in range(8)) for n in range(12)]


async def issue(http: aiohttp.ClientSession, live: Live, ip: dict[str, str]) -> int:
    async with http.post(
        live.url + "/api/auth/device/code", json={"client_id": "cero-cli"}, headers=ip
    ) as resp:
        return resp.status


async def test_wrong_code_limit_holds_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    async with aiohttp.ClientSession() as http:
        ip = fresh_ip()
        async with http.post(
            a.url + "/api/auth/device/code", json={"client_id": "cero-cli"}, headers=fresh_ip()
        ) as resp:
            good = (await resp.json())["user_code"]

        async def look(live: Live, user_code: str, headers: dict[str, str]) -> int:
            async with http.get(
                live.url + "/api/auth/device", params={"user_code": user_code}, headers=headers
            ) as resp:
                return resp.status

        # Twelve parallel wrong guesses from one IP, alternating between A and B: exactly
        # five are decided (400), the rest refused (429), as on one process.
        statuses = await asyncio.gather(
            *(look((a, b)[n % 2], code, ip) for n, code in enumerate(WRONG_CODES))
        )
        assert sorted(statuses) == [400] * 5 + [429] * 7, statuses
        # Now that IP is refused even a good code, on both; another IP is not.
        assert await look(a, good, ip) == 429
        assert await look(b, good, ip) == 429
        assert await look(b, good, fresh_ip()) == 200

        # Sequential wrong guesses: three on A and two on B use up the budget.
        ip = fresh_ip()
        for n in range(5):
            assert await look((a, a, a, b, b)[n], WRONG_CODES[n], ip) == 400
        assert await look(a, good, ip) == 429


async def test_device_code_issue_limit_holds_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    async with aiohttp.ClientSession() as http:
        ip = fresh_ip()
        assert [await issue(http, live, ip) for live in (a, b, a)] == [200] * DEVICE_CODE_LIMIT
        async with http.post(
            b.url + "/api/auth/device/code", json={"client_id": "cero-cli"}, headers=ip
        ) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
        assert await issue(http, b, fresh_ip()) == 200


# -- per-user chat limits -------------------------------------------------------------------


async def chat(
    http: aiohttp.ClientSession, live: Live, token: str, **body: Any
) -> aiohttp.ClientResponse:
    """``POST /api/chat`` (NDJSON); a 200 is read up to its ``init`` line and left open."""
    resp = await http.post(
        live.url + "/api/chat", json={"message": "hi", **body}, headers=bearer(token)
    )
    if resp.status == 200:
        first = orjson.loads(await resp.content.readline())
        assert first["topic"] == "init", first
    return resp


async def test_generation_limit_holds_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    token, user_id = await make_user_session("Greedy")
    ids = [str((await create_conversation(user_id, f"c{i}"))["id"]) for i in range(3)]
    async with aiohttp.ClientSession() as http:
        held = [await chat(http, a, token, conversationId=ids[0])]
        held.append(await chat(http, b, token, conversationId=ids[1]))
        assert [r.status for r in held] == [200, 200]
        for live in (a, b):
            refused = await chat(http, live, token, conversationId=ids[2])
            assert refused.status == 429, await refused.text()
            assert (await refused.json())["code"] == "rate_limited"
        # One ends on A: its slot is free for B.
        async with http.post(
            f"{a.url}/api/conversations/{ids[0]}/cancel", json={}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200
        await held[0].read()

        async def b_admits() -> bool:
            resp = await chat(http, b, token, conversationId=ids[2])
            held.append(resp)
            return resp.status == 200

        await until(b_admits)
        for conversation_id, live in ((ids[1], b), (ids[2], b)):
            async with http.post(
                f"{live.url}/api/conversations/{conversation_id}/cancel",
                json={},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200
        for resp in held:
            resp.close()


async def test_generation_slots_are_leases(cluster: Cluster) -> None:
    """Held slots are renewed; a slot its process stopped renewing (it died) frees itself."""
    limits = cluster.a.app[USER_LIMITS].limits
    assert isinstance(limits, RedisUserLimits)
    _, user_id = await make_user_session("Leased")
    key = f"{cluster.prefix}generations:{user_id}"
    client = cluster.a.app[REDIS]
    assert client is not None
    slots = [await limits.reserve_generation(user_id) for _ in range(MAX_GENERATIONS)]
    token = slots[0].token
    assert token is not None
    before = await client.zscore(key, token)
    assert before is not None

    async def renewed() -> bool:
        await limits.leases.renew()
        after = await client.zscore(key, token)
        return after is not None and after > before

    await until(renewed)
    # A Redis that restarted empty gets the slots still running back at the next renewal.
    await client.delete(key)
    await limits.leases.renew()
    assert await client.zcard(key) == MAX_GENERATIONS
    # A slot of a process that died: its expiry passed, nothing renews it.
    slots[1].release()
    await until(lambda: _card(client, key, 1))
    now_ms = int((await client.time())[0]) * 1000
    await client.zadd(key, {"dead-process-slot": now_ms - 1})
    assert await client.zcard(key) == MAX_GENERATIONS
    taken = await limits.reserve_generation(user_id)  # the dead one's slot was free
    assert await client.zscore(key, "dead-process-slot") is None
    for slot in (slots[0], taken):
        slot.release()
    await until(lambda: _card(client, key, 0))


async def _card(client: redis.Redis, key: str, n: int) -> bool:
    return bool(await client.zcard(key) == n)


async def test_new_conversation_limit_holds_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    token, _ = await make_user_session("Chatty")
    async with aiohttp.ClientSession() as http:
        for live in (a, b, a):
            async with http.post(
                live.url + "/api/chat",
                json={"message": "hi", "aiModel": "demo"},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
        async with http.post(
            b.url + "/api/chat", json={"message": "hi", "aiModel": "demo"}, headers=bearer(token)
        ) as resp:
            assert resp.status == 429
            assert (await resp.json())["code"] == "rate_limited"


async def test_sends_per_minute_hold_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    token, user_id = await make_user_session("Hasty")
    conversation = str((await create_conversation(user_id, "c"))["id"])
    async with aiohttp.ClientSession() as http:

        async def send(live: Live) -> aiohttp.ClientResponse:
            resp = await http.post(
                live.url + "/api/chat",
                json={"message": "hi", "aiModel": "demo", "conversationId": conversation},
                headers=bearer(token),
            )
            await resp.read()
            return resp

        statuses = [(await send((a, b)[n % 2])).status for n in range(SENDS_PER_MINUTE)]
        assert statuses == [200] * SENDS_PER_MINUTE
        for live in (a, b):
            resp = await send(live)
            assert resp.status == 429, await resp.text()
            body = await resp.json()
            assert body["code"] == "rate_limited" and body["retryAfter"] >= 1, body
            assert int(resp.headers["Retry-After"]) == body["retryAfter"]


async def open_ws(
    http: aiohttp.ClientSession, live: Live, token: str, ip: dict[str, str]
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(live.url + "/api/ws", headers={**bearer(token), **ip})


async def refused_stream(
    http: aiohttp.ClientSession, live: Live, token: str, ip: dict[str, str], path: str = "/api/ws"
) -> bool:
    async with http.get(live.url + path, headers={**bearer(token), **ip}) as resp:
        if resp.status != 429:
            return False
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["code"] == "rate_limited"
        return True


async def test_stream_limits_hold_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    token, user_id = await make_user_session("Streams")
    roommate, _ = await make_user_session("Roommate")
    conversation = str((await create_conversation(user_id, "c"))["id"])
    events = f"/api/conversations/{conversation}/events"
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        sockets = [await open_ws(http, a, token, ip), await open_ws(http, b, token, ip)]
        sse = await http.get(a.url + events, headers={**bearer(token), **ip})
        assert sse.status == 200
        # The user's cap, counted over both processes.
        assert await refused_stream(http, b, token, fresh_ip())
        assert await refused_stream(http, a, token, fresh_ip(), events)
        # The address's cap (4): one more for the roommate, then none, on either.
        sockets.append(await open_ws(http, b, roommate, ip))
        assert await refused_stream(http, a, roommate, ip)
        assert await refused_stream(http, b, roommate, ip)
        # One closes on A: B admits one more.
        await sockets.pop(0).close()

        async def b_admits() -> bool:
            try:
                sockets.append(await open_ws(http, b, token, fresh_ip()))
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429
                return False
            return True

        await until(b_admits)
        sse.close()
        for ws in sockets:
            await ws.close()
    client = a.app[REDIS]
    assert client is not None
    key = f"{cluster.prefix}streams-user:{user_id}"
    await until(lambda: _card(client, key, 0))


async def test_stream_slots_are_leases(cluster: Cluster) -> None:
    """Held stream slots are renewed; one its process stopped renewing frees itself."""
    streams = cluster.a.app[STREAM_LIMITS]
    assert isinstance(streams, RedisStreamLimits)
    _, user_id = await make_user_session("Leased streams")
    ip = f"lease-{user_id}"
    key = f"{cluster.prefix}streams-user:{user_id}"
    client = cluster.a.app[REDIS]
    assert client is not None
    slots = [await streams.open(user_id, ip) for _ in range(STREAMS_PER_USER - 1)]
    token = slots[0].token
    assert token is not None
    before = await client.zscore(key, token)
    assert before is not None

    async def renewed() -> bool:
        await streams.leases.renew()
        after = await client.zscore(key, token)
        return after is not None and after > before

    await until(renewed)
    # A slot of a process that died: its expiry passed, nothing renews it, it is free.
    now_ms = int((await client.time())[0]) * 1000
    await client.zadd(key, {"dead-process-slot": now_ms - 1})
    slots.append(await streams.open(user_id, ip))
    assert await client.zscore(key, "dead-process-slot") is None
    with pytest.raises(Refused) as refused:
        await streams.open(user_id, ip)
    assert refused.value.limit == "streams_per_user"
    for slot in slots:
        slot.release()
        slot.release()  # exactly once
    await until(lambda: _card(client, key, 0))
    assert await client.zcard(f"{cluster.prefix}streams-ip:{ip}") == 0


async def test_sign_in_limit_holds_across_two_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:

        async def sign_in(live: Live, headers: dict[str, str]) -> int:
            async with http.get(
                live.url + "/auth/github", headers=headers, allow_redirects=False
            ) as resp:
                return resp.status

        assert [await sign_in((a, b)[n % 2], ip) for n in range(SIGN_IN_LIMIT)] == [302] * 4
        assert [await sign_in(live, ip) for live in (a, b)] == [429, 429]
        assert await sign_in(b, fresh_ip()) == 302


# -- Redis faults -----------------------------------------------------------------------------


async def test_redis_down_then_back_without_restarting(postgres_url: str) -> None:
    private = PrivateRedis()
    await private.start()
    settings = lambda port: make_settings(  # noqa: E731
        postgres_url, port=port, redis_url=private.url
    )
    try:
        async with (
            contextlib.AsyncExitStack() as stack,
            running(settings) as live,
            aiohttp.ClientSession() as http,
        ):
            token, _ = await make_user_session("Patient")

            async def send() -> aiohttp.ClientResponse:
                resp = await http.post(
                    live.url + "/api/chat",
                    json={"message": "hi", "aiModel": "demo"},
                    headers=bearer(token),
                )
                await resp.read()
                return resp

            async def ready(app: Live = live) -> int:
                async with http.get(app.url + "/readyz") as resp:
                    return resp.status

            assert await ready() == 200
            assert (await send()).status == 200
            names = codec(live.settings)
            async with http.get(
                live.url + "/api/user/whoami", headers=session_cookie(live.settings, token)
            ) as resp:
                cache = set_cookies(resp)[names.cache_name].value
            jar = {names.session_name: names.session_value(token), names.cache_name: cache}
            # A session revoked through `live` while Redis is up, its cookie cache then
            # shown to a process started afterwards (so it never heard the revocation, only
            # Redis knows): refused, and still after Redis restarted empty (below).
            revoked, _ = await make_user_session("Revoked before the restart")
            revoked_jar = await cache_cookie(http, live, revoked)
            async with http.post(live.url + "/api/auth/sign-out", headers=bearer(revoked)) as resp:
                assert resp.status == 200
            other = await stack.enter_async_context(running(settings))
            async with http.get(
                other.url + "/api/user/whoami", headers=cookie_header(revoked_jar)
            ) as resp:
                assert resp.status == 401

            await private.kill()
            assert await ready(other) == 503
            async with http.get(live.url + "/readyz") as resp:
                assert resp.status == 503
                body = await resp.json()
            assert body["code"] == "not_ready" and body["error"].startswith("redis: "), body
            refused = await send()
            assert refused.status == 503
            assert (await refused.json())["code"] == "not_ready"
            assert not live.app[REDIS_HEALTH].up
            # Live connections cannot be counted either: refused before the upgrade.
            async with http.get(live.url + "/api/ws", headers=bearer(token)) as resp:
                assert resp.status == 503
                assert (await resp.json())["code"] == "not_ready"
            # Sign-in limits cannot be counted: refused, never unlimited.
            async with http.get(
                live.url + "/api/auth/device", params={"user_code": "BCDF-GHJK"}
            ) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"] == "not_ready"
            # A cookie-cache hit cannot be checked against revocations: the database
            # decides, and the session is good.
            async with http.get(live.url + "/api/user/whoami", headers=cookie_header(jar)) as resp:
                assert resp.status == 200

            await private.start()  # same port, empty

            async def recovered() -> bool:
                return await ready() == 200

            await until(recovered)
            assert await ready(other) == 200
            # The restarted Redis forgot the revocation; `other` does not trust its cookie
            # caches for their lifetime after a fault: the database refuses the session.
            async with http.get(
                other.url + "/api/user/whoami", headers=cookie_header(revoked_jar)
            ) as resp:
                assert resp.status == 401
            resp = await send()
            assert resp.status == 200, await resp.text()
            lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
            assert lines[-1]["topic"] == "done", lines[-1]
            async with http.get(live.url + "/metrics", headers=METRICS_AUTH) as resp:
                text = await resp.text()
            assert "cero_redis_up 1.0" in text
            assert 'cero_redis_errors_total{op="ping"}' in text
    finally:
        await private.kill()
