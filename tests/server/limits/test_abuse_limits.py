"""Abuse limits (issue 13): each one refuses past its setting, and only past it.

- chat sends per user per minute (``CERO_SENDS_PER_MINUTE``): ``429 rate_limited`` with
  ``Retry-After`` on ``POST /api/chat``, a ``fault`` with ``retryAfter`` on a WebSocket
  ``send`` (the socket stays open); a ``clientMessageId`` retry is never refused, and a
  refused send holds no generation slot;
- WebSocket frames per second per connection (``CERO_WS_FRAMES_PER_SECOND`` /
  ``CERO_WS_FRAME_BURST``): frames over the rate are dropped with at most one ``fault`` a
  second, and a flood that goes on closes with 1008;
- live connections per user and per address (``CERO_MAX_STREAMS_PER_USER`` /
  ``CERO_MAX_STREAMS_PER_IP``): a WebSocket handshake or an SSE ``GET .../events`` past
  either gets ``429`` JSON with ``Retry-After`` before it starts, a closed one gives its slot
  back (however it ended), and chat responses are not counted;
- sign-in requests per address (``CERO_SIGN_IN_LIMIT`` / ``CERO_SIGN_IN_WINDOW``), one
  window shared by the five sign-in paths.

Every refusal is counted in ``cero_limit_refusals{limit}``. Real server on a real socket,
both engines; the app trusts 127.0.0.1 as a proxy, so each test has addresses of its own
(``X-Forwarded-For``). The token bucket itself is also checked on a fake clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from server.core.config import ConfigError, load_settings
from server.limits.stream_limits import STREAM_LIMITS
from server.limits.user_limits import USER_LIMITS
from server.storage.chat_store import create_conversation
from server.transports.frame_rate import FLOOD_SECONDS, FrameRate, Verdict
from tests.auth_helpers import bearer, fresh_ip, make_user_session
from tests.conditions import until
from tests.conftest import Live
from tests.live_clients import WsPeer
from tests.process_stats import refusals

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDS = 4
FRAMES_PER_S = 5.0
BURST = 5
STREAMS_PER_USER = 3
STREAMS_PER_IP = 5
SIGN_IN = 5


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """This module's app (conftest's ``live``): its limits set low enough to reach."""
    return {
        "trusted_proxies": ["127.0.0.1/32"],
        "sends_per_minute": SENDS,
        "ws_frames_per_second": FRAMES_PER_S,
        "ws_frame_burst": BURST,
        "max_streams_per_user": STREAMS_PER_USER,
        "max_streams_per_ip": STREAMS_PER_IP,
        "sign_in_limit": SIGN_IN,
        "sign_in_window": 600,
    }


async def assert_429(resp: aiohttp.ClientResponse, *, auth: bool = False) -> dict[str, Any]:
    assert resp.status == 429, await resp.text()
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    if auth:  # OAuth style under /api/auth/
        assert body["error"] == "rate_limited" and body["error_description"], body
    else:
        assert body["code"] == "rate_limited" and isinstance(body["error"], str), body
    return body


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("CERO_SENDS_PER_MINUTE", "sends_per_minute", 0),
        ("CERO_WS_FRAMES_PER_SECOND", "ws_frames_per_second", 0),
        ("CERO_WS_FRAME_BURST", "ws_frame_burst", 0),
        ("CERO_MAX_STREAMS_PER_USER", "max_streams_per_user", 0),
        ("CERO_MAX_STREAMS_PER_IP", "max_streams_per_ip", -1),
        ("CERO_SIGN_IN_LIMIT", "sign_in_limit", 0),
        ("CERO_SIGN_IN_WINDOW", "sign_in_window", 0),
    ],
)
async def test_settings_are_validated(name: str, field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env_file=None, secret="s" * 32, **{field: value})


# -- sends per minute --------------------------------------------------------------------------


async def chat(
    http: aiohttp.ClientSession, live: Live, token: str, **body: Any
) -> tuple[int, list[dict[str, Any]], aiohttp.ClientResponse]:
    async with http.post(
        live.url + "/api/chat",
        json={"message": "hi", "aiModel": "demo", **body},
        headers=bearer(token),
    ) as resp:
        raw = await resp.read()
    if resp.status != 200:
        return resp.status, [], resp
    return 200, [orjson.loads(line) for line in raw.splitlines() if line], resp


async def test_sends_per_minute_http_and_websocket(live: Live) -> None:
    token, user_id = await make_user_session("Sender")
    conversation = str((await create_conversation(user_id, "c"))["id"])
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "sends")
        for n in range(SENDS):
            status, lines, _ = await chat(
                http, live, token, conversationId=conversation, clientMessageId=f"k{n}"
            )
            assert status == 200 and lines[-1]["topic"] == "done", lines
        async with http.post(
            live.url + "/api/chat",
            json={"message": "one too many", "aiModel": "demo", "conversationId": conversation},
            headers=bearer(token),
        ) as resp:
            body = await assert_429(resp)
            assert body["retryAfter"] == int(resp.headers["Retry-After"])
            assert 1 <= body["retryAfter"] <= 60
        # The refused send took its generation slot back on the way out.
        assert live.app[USER_LIMITS].generations.running(user_id) == 0
        # A retry of a turn already started starts nothing: answered, not refused.
        status, lines, _ = await chat(http, live, token, clientMessageId="k1")
        assert status == 200 and lines[-1]["topic"] == "done", lines
        # Another user is not affected.
        other, _ = await make_user_session("Bystander")
        assert (await chat(http, live, other))[0] == 200

        # The WebSocket send of the same user shares the budget: a fault, socket open.
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token))
        peer = WsPeer(ws).start()
        await peer.send(type="send", message="hi", aiModel="demo", conversationId=conversation)
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "rate_limited" and fault["retryAfter"] >= 1, fault
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")
        await peer.close()
        assert await refusals(http, live.url, "sends") == before + 2


# -- WebSocket frames per second ---------------------------------------------------------------


async def test_frame_bucket_on_a_fake_clock() -> None:
    now = [100.0]
    bucket = FrameRate(8.0, 3, clock=lambda: now[0])  # 1/8 s a frame: exact in binary
    assert [bucket.admit() for _ in range(3)] == [Verdict.ADMIT] * 3  # the burst
    assert bucket.admit() is Verdict.FAULT  # the first frame over: answered once...
    assert bucket.retry_after() == 1
    assert [bucket.admit() for _ in range(5)] == [Verdict.DROP] * 5  # ...the rest dropped
    now[0] += 0.125  # one frame's worth of refill
    assert bucket.admit() is Verdict.ADMIT
    assert bucket.admit() is Verdict.DROP  # within the second: no second fault
    now[0] += 1.0  # refilled to the burst (not more), and a fault may be sent again
    assert [bucket.admit() for _ in range(3)] == [Verdict.ADMIT] * 3
    assert bucket.admit() is Verdict.FAULT
    # Going on over the rate: 5 s worth of frames (40) dropped within 10 s closes it;
    # 8 were dropped above.
    verdicts = [bucket.admit() for _ in range(FLOOD_SECONDS * 8)]
    assert verdicts.index(Verdict.CLOSE) == FLOOD_SECONDS * 8 - 8
    assert set(verdicts[: FLOOD_SECONDS * 8 - 8]) == {Verdict.DROP}
    # Dropped frames older than the window no longer count: a fresh budget of 40.
    now[0] += 11.0
    assert [bucket.admit() for _ in range(3)] == [Verdict.ADMIT] * 3
    verdicts = [bucket.admit() for _ in range(FLOOD_SECONDS * 8 + 1)]
    assert verdicts[0] is Verdict.FAULT and verdicts[-1] is Verdict.CLOSE
    assert Verdict.CLOSE not in verdicts[:-1]


async def test_frame_flood_is_dropped_then_closed_1008(live: Live) -> None:
    token, user_id = await make_user_session("Flooder")
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "ws_frames")
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token))
        peer = WsPeer(ws).start()
        ping = orjson.dumps({"type": "ping"}).decode()
        for _ in range(BURST + 10):  # the burst, then ten over the rate
            await ws.send_str(ping)
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "rate_limited" and fault["retryAfter"] >= 1, fault
        faults = [f for f in peer.frames if f["type"] == "fault"]
        assert len(faults) == 1, faults  # ten dropped frames, one answer
        acked = sum(1 for f in peer.frames if f.get("of") == "ping")
        assert BURST <= acked <= BURST + 2  # the burst (and a frame or two of refill)
        await asyncio.sleep(1.2)  # the bucket refills with time (nothing to poll for)
        await peer.send(type="ping")  # the socket stayed open and serves again
        await until(lambda: sum(1 for f in peer.frames if f.get("of") == "ping") > acked)
        assert await refusals(http, live.url, "ws_frames") >= before + 10

        # A flood that goes on: closed with 1008, having been answered at most once a
        # second (not once per frame).
        for _ in range(300):
            if ws.closed:
                break
            await ws.send_str(ping)
        await asyncio.wait_for(peer._task, 5)  # type: ignore[arg-type]
        assert peer.close_code == 1008
        assert len([f for f in peer.frames if f["type"] == "fault"]) <= 3
        # Its stream slot was given back with it.
        await until(lambda: live.app[STREAM_LIMITS].open_for_user(user_id) == 0)


# -- live connections per user and per address -------------------------------------------------


async def ws_status(
    http: aiohttp.ClientSession, live: Live, token: str, ip: dict[str, str]
) -> tuple[int, aiohttp.ClientWebSocketResponse | None]:
    try:
        ws = await http.ws_connect(live.url + "/api/ws", headers={**bearer(token), **ip})
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status, None
    return 101, ws


async def test_streams_per_user_are_capped_and_given_back(live: Live) -> None:
    token, user_id = await make_user_session("Streamer")
    conversation = str((await create_conversation(user_id, "c"))["id"])
    streams = live.app[STREAM_LIMITS]
    ip = fresh_ip()
    events_url = f"{live.url}/api/conversations/{conversation}/events"
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "streams_per_user")
        opened = []
        for _ in range(STREAMS_PER_USER - 1):
            status, ws = await ws_status(http, live, token, ip)
            assert status == 101
            opened.append(ws)
        # A stream that fails (404: no such conversation) holds nothing afterwards.
        async with http.get(
            f"{live.url}/api/conversations/nope/events", headers={**bearer(token), **ip}
        ) as resp:
            assert resp.status == 404
        assert streams.open_for_user(user_id) == STREAMS_PER_USER - 1
        sse = await http.get(events_url, headers={**bearer(token), **ip})
        assert sse.status == 200
        assert streams.open_for_user(user_id) == STREAMS_PER_USER

        # One more: refused before the upgrade / the stream, JSON with Retry-After.
        assert (await ws_status(http, live, token, fresh_ip()))[0] == 429
        async with http.get(live.url + "/api/ws", headers={**bearer(token), **ip}) as resp:
            await assert_429(resp)
        async with http.get(events_url, headers={**bearer(token), **ip}) as resp:
            await assert_429(resp)
        # A chat response is not a live connection: still served at the cap.
        assert (await chat(http, live, token, conversationId=conversation))[0] == 200
        assert await refusals(http, live.url, "streams_per_user") == before + 3

        # Close one (a WebSocket), open one more: it succeeds; likewise for the SSE stream.
        ws0 = opened.pop(0)
        assert ws0 is not None
        await ws0.close()
        await until(lambda: streams.open_for_user(user_id) == STREAMS_PER_USER - 1)
        status, ws = await ws_status(http, live, token, ip)
        assert status == 101
        opened.append(ws)
        assert (await ws_status(http, live, token, ip))[0] == 429
        sse.close()
        await until(lambda: streams.open_for_user(user_id) == STREAMS_PER_USER - 1)
        async with http.get(events_url, headers={**bearer(token), **ip}) as resp:
            assert resp.status == 200
        for ws in opened:
            assert ws is not None
            await ws.close()
        await until(lambda: streams.open_for_user(user_id) == 0)


async def test_streams_per_address_are_capped(live: Live) -> None:
    first, _ = await make_user_session("Roommate 1")
    second, _ = await make_user_session("Roommate 2")
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "streams_per_ip")
        opened = []
        for token in [first] * STREAMS_PER_USER + [second] * (STREAMS_PER_IP - STREAMS_PER_USER):
            status, ws = await ws_status(http, live, token, ip)
            assert status == 101
            opened.append(ws)
        # The second user is under its own cap, but the address is full.
        async with http.get(live.url + "/api/ws", headers={**bearer(second), **ip}) as resp:
            await assert_429(resp)
        assert await refusals(http, live.url, "streams_per_ip") == before + 1
        # From another address the same user is served.
        status, ws = await ws_status(http, live, second, fresh_ip())
        assert status == 101
        opened.append(ws)
        for ws in opened:
            assert ws is not None
            await ws.close()


# -- sign-in per address -----------------------------------------------------------------------


async def test_sign_in_requests_per_address(live: Live) -> None:
    ip = fresh_ip()
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "sign_in")

        async def attempts(headers: dict[str, str]) -> list[int]:
            statuses = []
            for method, path, body in (
                ("POST", "/api/auth/sign-in/social", {"provider": "github", "callbackURL": "/"}),
                ("POST", "/api/auth/sign-in/github", {}),
                ("GET", "/auth/github", None),
                ("GET", "/api/auth/callback/github?code=c&state=s", None),
                ("GET", "/auth/local?token=wrong", None),
            ):
                async with http.request(
                    method, live.url + path, json=body, headers=headers, allow_redirects=False
                ) as resp:
                    statuses.append(resp.status)
            return statuses

        # GitHub is not configured (404), the local token is wrong (403): still counted.
        assert 429 not in await attempts(ip)
        assert await attempts(ip) == [429] * 5
        async with http.post(
            live.url + "/api/auth/sign-in/social", json={"provider": "github"}, headers=ip
        ) as resp:
            await assert_429(resp, auth=True)
        async with http.get(live.url + "/auth/local?token=x", headers=ip) as resp:
            await assert_429(resp)
        assert 429 not in await attempts(fresh_ip())  # another address has its own window
        assert await refusals(http, live.url, "sign_in") == before + 7
