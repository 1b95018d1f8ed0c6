"""The account channel (docs/api.md, Account channel; issue 24 item 1), on both engines:
one device follows the account over the WebSocket, another over SSE; a chat started,
renamed and deleted elsewhere reaches both, in order, with cursors that resume without a
gap or a duplicate (or ``reset``); one user never sees another's events; a revoked
session is announced to the user's other devices.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import orjson
import pytest

from server.auth.sessions import SessionStore
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import SseEvent, WsPeer, chat, read_sse

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACCOUNT_TYPES = {
    "conversation.created",
    "conversation.renamed",
    "conversation.deleted",
    "answer.started",
    "answer.ended",
    "session.revoked",
}


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.002}


async def _peer(live: Live, http: aiohttp.ClientSession, token: str) -> WsPeer:
    return WsPeer(await http.ws_connect(f"{live.url}/api/ws?token={token}")).start()


def _account(peer: WsPeer) -> list[dict[str, Any]]:
    return [
        f
        for f in peer.frames
        if f.get("channel") == "account" and f["type"] not in ("subscribed", "ack")
    ]


def _check_seq(events: list[dict[str, Any]]) -> None:
    for before, after in itertools.pairwise(events):
        assert after["seq"] == before["seq"] + 1, (before, after)
        assert after["epoch"] == before["epoch"]


async def _watch(peer: WsPeer, after: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": "account"}
    if after is not None:
        frame["after"] = after
    await peer.send(**frame)
    return await peer.wait_for(lambda f: f.get("type") == "subscribed")


async def _sse_until(
    http: aiohttp.ClientSession,
    live: Live,
    token: str,
    done: Any,
    *,
    after: str | None = None,
    opened: asyncio.Event | None = None,
) -> list[SseEvent]:
    headers = bearer(token)
    if after is not None:
        headers["Last-Event-ID"] = after
    out: list[SseEvent] = []
    async with http.get(live.url + "/api/account/events", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()
        async for event in read_sse(resp):
            out.append(event)
            if done(event):
                return out
    return out


async def test_every_change_reaches_every_device_in_order(live: Live) -> None:
    token, _ = await make_user_session("Channel")
    async with aiohttp.ClientSession() as http:
        ws = await _peer(live, http, token)
        subscribed = await _watch(ws)
        assert subscribed["recovered"] is True or subscribed["recovered"] is False
        assert isinstance(subscribed["epoch"], str) and isinstance(subscribed["seq"], int)
        opened = asyncio.Event()
        sse = asyncio.create_task(
            _sse_until(
                http, live, token, lambda e: e.event == "conversation.deleted", opened=opened
            )
        )
        await asyncio.wait_for(opened.wait(), 5)
        await asyncio.sleep(0.1)  # the SSE subscription is taken right after the headers

        lines = await chat(http, live.url, token, message="plan a trip to Lisbon", aiModel="demo")
        assert lines[-1]["topic"] == "done"
        cid = lines[0]["data"]["conversationId"]
        await ws.wait_for(lambda f: f.get("type") == "answer.ended")
        async with http.patch(
            f"{live.url}/api/conversations/{cid}",
            json={"shortTitle": "Lisbon"},
            headers=bearer(token),
        ) as resp:
            assert resp.status == 200
        async with http.delete(f"{live.url}/api/conversations/{cid}", headers=bearer(token)) as r:
            assert r.status == 200
        await ws.wait_for(lambda f: f.get("type") == "conversation.deleted")
        events = _account(ws)
        kinds = [e["type"] for e in events]
        assert kinds == [
            "conversation.created",
            "answer.started",
            "answer.ended",
            "conversation.renamed",
            "conversation.deleted",
        ], kinds
        _check_seq(events)
        assert events[0]["seq"] == subscribed["seq"] + 1
        created, started, ended, renamed, deleted = events
        for event in events:
            assert event["conversationId"] == cid
        assert created["conversation"]["id"] == cid
        assert created["conversation"]["shortTitle"].startswith("plan a trip")
        assert set(created["conversation"]) == {"id", "shortTitle", "createdAt", "updatedAt"}
        assert started["messageId"] == ended["messageId"]
        assert started["generationId"] == ended["generationId"]
        assert ended["status"] == "complete"
        assert renamed["conversation"]["shortTitle"] == "Lisbon"
        assert "conversation" not in deleted

        # The SSE device saw the same events, each with its cursor as the SSE id.
        got = await asyncio.wait_for(sse, 10)
        account = [e for e in got if e.event in ACCOUNT_TYPES]
        assert [e.data for e in account] == events
        assert all(e.id == f"{e.data['epoch']}:{e.data['seq']}" for e in account)
        await ws.close()


async def test_resume_replays_what_was_missed_without_duplicates(live: Live) -> None:
    token, _ = await make_user_session("Resume")
    async with aiohttp.ClientSession() as http:
        ws = await _peer(live, http, token)
        await _watch(ws)
        await chat(http, live.url, token, message="one", aiModel="demo")
        first = await ws.wait_for(lambda f: f.get("type") == "answer.ended")
        cursor = f"{first['epoch']}:{first['seq']}"
        await ws.close()
        # Missed while away: a second conversation.
        lines = await chat(http, live.url, token, message="two", aiModel="demo")
        cid = lines[0]["data"]["conversationId"]

        again = await _peer(live, http, token)
        subscribed = await _watch(again, after=cursor)
        assert subscribed["recovered"] is True
        await again.wait_for(lambda f: f.get("type") == "answer.ended")
        replayed = _account(again)
        assert [e["type"] for e in replayed] == [
            "conversation.created",
            "answer.started",
            "answer.ended",
        ]
        assert replayed[0]["seq"] == first["seq"] + 1
        assert all(e["conversationId"] == cid for e in replayed)

        # SSE resumes the same way, from Last-Event-ID.
        got = await _sse_until(http, live, token, lambda e: e.event == "answer.ended", after=cursor)
        assert [e.data for e in got if e.event in ACCOUNT_TYPES] == replayed

        # A cursor of another epoch cannot be replayed: recovered false, then reset.
        other = await _peer(live, http, token)
        subscribed = await _watch(other, after="nosuchepoch:3")
        assert subscribed["recovered"] is False
        reset = await other.wait_for(lambda f: f.get("type") == "reset")
        assert reset["channel"] == "account" and reset["seq"] == subscribed["seq"]
        for peer in (again, other):
            await peer.close()


async def test_one_user_never_sees_another_users_events(live: Live) -> None:
    alice, _ = await make_user_session("Alice")
    bob, _ = await make_user_session("Bob")
    async with aiohttp.ClientSession() as http:
        watcher = await _peer(live, http, bob)
        await _watch(watcher)
        await chat(http, live.url, alice, message="secret plans", aiModel="demo")
        # Bob's own chat after Alice's: when its events arrive, Alice's would have too.
        await chat(http, live.url, bob, message="mine", aiModel="demo")
        await watcher.wait_for(lambda f: f.get("type") == "answer.ended")
        for event in _account(watcher):
            assert "secret" not in orjson.dumps(event).decode()
        assert next(e["type"] for e in _account(watcher)) == "conversation.created"
        assert len([e for e in _account(watcher) if e["type"] == "conversation.created"]) == 1
        await watcher.close()


async def test_a_revoked_session_is_announced_to_the_other_devices(live: Live) -> None:
    token, user_id = await make_user_session("Two sessions")
    other_token, _ = await SessionStore().start(user_id, ip_address="127.0.0.1", user_agent="b")
    async with aiohttp.ClientSession() as http:
        ws = await _peer(live, http, token)
        await _watch(ws)
        async with http.get(live.url + "/api/auth/list-sessions", headers=bearer(token)) as resp:
            sessions = orjson.loads(await resp.read())
        other_id = next(s["id"] for s in sessions if not s["current"])
        async with http.post(
            live.url + "/api/auth/revoke-session", json={"id": other_id}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200
        event = await ws.wait_for(lambda f: f.get("type") == "session.revoked")
        assert event["sessionId"] == other_id and event["channel"] == "account"
        # The revoked session can no longer watch.
        async with http.get(live.url + "/api/account/events", headers=bearer(other_token)) as resp:
            assert resp.status == 401
        await ws.close()


async def test_sign_out_everywhere_else_revokes_the_others_and_announces_each(
    live: Live,
) -> None:
    """``POST /api/auth/revoke-other-sessions`` (Better Auth's): every session of the user
    but the caller's is revoked, each announced; another user's sessions are untouched."""
    token, user_id = await make_user_session("Many sessions")
    store = SessionStore()
    others = [
        (await store.start(user_id, ip_address="127.0.0.1", user_agent=f"device {i}"))[0]
        for i in range(2)
    ]
    stranger, _ = await make_user_session("Stranger")
    async with aiohttp.ClientSession() as http:
        ws = await _peer(live, http, token)
        await _watch(ws)
        async with http.get(live.url + "/api/auth/list-sessions", headers=bearer(token)) as resp:
            before = {s["id"] for s in orjson.loads(await resp.read()) if not s["current"]}
        assert len(before) == 2
        async with http.post(
            live.url + "/api/auth/revoke-other-sessions", json={}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": True}
        await ws.wait_for(
            lambda f: (
                {e["sessionId"] for e in _account(ws) if e["type"] == "session.revoked"} == before
            )
        )
        async with http.get(live.url + "/api/auth/list-sessions", headers=bearer(token)) as resp:
            after = orjson.loads(await resp.read())
        assert [s["current"] for s in after] == [True]
        for other in others:
            async with http.get(live.url + "/api/user/whoami", headers=bearer(other)) as resp:
                assert resp.status == 401
        async with http.get(live.url + "/api/user/whoami", headers=bearer(stranger)) as resp:
            assert resp.status == 200
        # Alone already: nothing to revoke, the same answer.
        async with http.post(
            live.url + "/api/auth/revoke-other-sessions", headers=bearer(token)
        ) as resp:
            assert resp.status == 200
        await ws.close()


async def test_bad_frames_and_unsubscribe(live: Live) -> None:
    token, _ = await make_user_session("Frames")
    async with aiohttp.ClientSession() as http:
        ws = await _peer(live, http, token)
        await ws.send(type="subscribe", channel="billing")
        fault = await ws.wait_for(lambda f: f.get("type") == "fault")
        assert fault["code"] == "invalid_frame"
        await ws.send(type="subscribe", conversationId="@account")
        fault = await ws.wait_for(lambda f: f.get("type") == "fault" and f is not fault)
        assert fault["code"] == "not_found"
        await _watch(ws)
        await ws.send(type="unsubscribe", channel="account")
        ack = await ws.wait_for(lambda f: f.get("type") == "ack")
        assert ack == {
            "type": "ack",
            "of": "unsubscribe",
            "channel": "account",
            "unsubscribed": True,
        }
        await chat(http, live.url, token, message="unseen", aiModel="demo")
        await asyncio.sleep(0.3)
        assert _account(ws) == []
        await ws.close()
        # Without a credential: 401 before any stream.
        async with http.get(live.url + "/api/account/events") as resp:
            assert resp.status == 401
