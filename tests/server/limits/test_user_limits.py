"""Per-user and per-socket limits (issue 15, item 12: one user pinned unbounded memory).

- concurrent generations per user (``CERO_MAX_GENERATIONS_PER_USER``): one more send gets
  ``429 rate_limited`` with ``Retry-After`` (a WebSocket ``fault``), counted exactly under
  concurrency and given back however a generation ends;
- new conversations per user per hour (``CERO_NEW_CONVERSATIONS_PER_HOUR``): ``429``;
- subscriptions per WebSocket (``CERO_WS_MAX_SUBSCRIPTIONS``): ``fault``
  ``too_many_subscriptions``, the socket stays open.

Meanwhile another user is served. Real server on a real socket, the Gemini stand-in
holding answers open (each stalls after its first token until cancelled), both engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from server.core.app_keys import REGISTRY
from server.limits.user_limits import USER_LIMITS
from server.storage.chat_store import create_conversation
from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import Live, live_with_gemini, make_settings, start_live
from tests.live_clients import WsPeer, post_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_GENERATIONS = 3
NEW_PER_HOUR = 4
MAX_SUBSCRIPTIONS = 5
#: Every answer stalls after its first token (until cancelled, or 60 s).
STALLING = Script(chunks=["Hold ", "on"], stall_after=1, stall_seconds=60)
QUICK = Script(chunks=["Quick ", "answer"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini]]:
    async with live_with_gemini(
        database_url,
        default_script=STALLING,
        gemini_retry_backoff=0.5,  # the server's default (this module's settings before)
        max_generations_per_user=MAX_GENERATIONS,
        new_conversations_per_hour=NEW_PER_HOUR,
        ws_max_subscriptions=MAX_SUBSCRIPTIONS,
    ) as (live, fake):
        yield live, fake


def running(live: Live, user_id: str) -> int:
    return live.app[USER_LIMITS].generations.running(user_id)


async def conversations(user_id: str, n: int) -> list[str]:
    """Conversations made in the database (not through the rate-limited chat)."""
    return [str((await create_conversation(user_id, f"c{i}"))["id"]) for i in range(n)]


async def start(
    http: aiohttp.ClientSession, live: Live, token: str, **body: Any
) -> aiohttp.ClientResponse:
    """``POST /api/chat`` (NDJSON); a 200 is read up to its ``init`` line and left open."""
    resp = await post_chat(http, live.url, token, **{"message": "hi", **body})
    if resp.status == 200:
        first = orjson.loads(await resp.content.readline())
        assert first["topic"] == "init", first
    return resp


async def cancel_all(http: aiohttp.ClientSession, live: Live, token: str, ids: list[str]) -> None:
    for conversation_id in ids:
        async with http.post(
            f"{live.url}/api/conversations/{conversation_id}/cancel", json={}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200


async def assert_refused(resp: aiohttp.ClientResponse) -> None:
    assert resp.status == 429, await resp.text()
    assert int(resp.headers["Retry-After"]) >= 1
    body = await resp.json()
    assert body["code"] == "rate_limited" and isinstance(body["error"], str), body


async def others_are_served(http: aiohttp.ClientSession, live: Live) -> None:
    """Another user's chat and ``/healthz`` while the first one is at its limits."""
    token, _ = await make_user_session("Bystander")
    async with http.get(live.url + "/healthz") as resp:
        assert resp.status == 200
    async with post_chat(http, live.url, token, message="hello", aiModel="demo") as resp:
        assert resp.status == 200
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
    assert lines[-1]["topic"] == "done", lines[-1]


async def test_concurrent_generations_are_capped_exactly(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, user_id = await make_user_session("Greedy")
    ids = await conversations(user_id, 12)
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(start(http, live, token, conversationId=c) for c in ids))
        accepted = [c for c, r in zip(ids, answers, strict=True) if r.status == 200]
        refused = [r for r in answers if r.status != 200]
        assert len(accepted) == MAX_GENERATIONS, [r.status for r in answers]
        for resp in refused:
            await assert_refused(resp)
        assert running(live, user_id) == MAX_GENERATIONS
        # A refused send stored nothing.
        refused_ids = [c for c in ids if c not in accepted]
        stored = await Message.count().where(Message.conversation_id.is_in(refused_ids)).run()
        assert stored == 0
        await others_are_served(http, live)

        # One ends (cancelled): exactly one more may start.
        await cancel_all(http, live, token, accepted[:1])
        assert running(live, user_id) == MAX_GENERATIONS - 1
        again = await asyncio.gather(
            *(start(http, live, token, conversationId=c) for c in refused_ids[:4])
        )
        assert sorted(r.status for r in again) == [200, 429, 429, 429]
        started = [c for c, r in zip(refused_ids[:4], again, strict=True) if r.status == 200]
        await cancel_all(http, live, token, accepted[1:] + started)
        for resp in answers + again:
            resp.close()
    assert running(live, user_id) == 0


async def test_every_ending_gives_the_slot_back(env: tuple[Live, FakeGemini]) -> None:
    live, fake = env
    token, user_id = await make_user_session("Ends")
    a, b, c, d = await conversations(user_id, 4)
    async with aiohttp.ClientSession() as http:
        # done
        fake.enqueue(QUICK)
        async with post_chat(http, live.url, token, message="q", conversationId=a) as resp:
            lines = [orjson.loads(x) for x in (await resp.read()).splitlines() if x]
        assert lines[-1]["topic"] == "done"
        assert running(live, user_id) == 0
        # error before the first token (a model 400 is not retried)
        fake.enqueue(Script(error_before=[400]))
        async with post_chat(http, live.url, token, message="e", conversationId=a) as resp:
            lines = [orjson.loads(x) for x in (await resp.read()).splitlines() if x]
        assert lines[-1]["topic"] == "error", lines
        assert running(live, user_id) == 0
        fake.scripts.clear()  # the stand-in keeps a script whose error_before was served

        # A busy conversation answers 409 and holds nothing.
        held = await start(http, live, token, conversationId=b, clientMessageId="key-b")
        assert held.status == 200 and running(live, user_id) == 1
        busy = await start(http, live, token, conversationId=b)
        assert busy.status == 409 and running(live, user_id) == 1
        # At the limit, a retry of a running turn is still answered (it starts nothing).
        others = [await start(http, live, token, conversationId=x) for x in (a, c)]
        assert [r.status for r in others] == [200, 200] and running(live, user_id) == 3
        retry = await start(http, live, token, clientMessageId="key-b")
        assert retry.status == 200 and running(live, user_id) == 3
        # Refused at the limit: an idle conversation (a busy one answers 409, as above).
        await assert_refused(await start(http, live, token, conversationId=d))

        # crash: the actor loop dies mid-answer
        actor = live.app[REGISTRY].peek(c)
        assert actor is not None
        actor.task.cancel()
        await until(lambda: running(live, user_id) == 2, 5)
        # cancel
        await cancel_all(http, live, token, [a, b])
        assert running(live, user_id) == 0
        for resp in [held, busy, retry, *others]:
            resp.close()


async def test_shutdown_gives_the_slots_back(
    env: tuple[Live, FakeGemini], database_url: str
) -> None:
    _, fake = env
    live = await start_live(
        lambda port: make_settings(
            database_url, port=port, gemini_api_key="k", gemini_base_url=fake.base_url
        )
    )  # not live_app: the test closes this server itself, mid-answer
    token, user_id = await make_user_session("Shut")
    ids = await conversations(user_id, 2)
    async with aiohttp.ClientSession() as http:
        answers = [await start(http, live, token, conversationId=c) for c in ids]
        assert [r.status for r in answers] == [200, 200]
        assert running(live, user_id) == 2
        await live.server.close()
        for resp in answers:
            resp.close()
    assert running(live, user_id) == 0


async def test_websocket_send_beyond_the_limit_faults(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, user_id = await make_user_session("Socket")
    ids = await conversations(user_id, MAX_GENERATIONS + 1)
    async with aiohttp.ClientSession() as http:
        peer = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        for conversation_id in ids:
            await peer.send(type="send", conversationId=conversation_id, message="go")
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "rate_limited" and fault["retryAfter"] >= 1, fault
        acks = [f for f in peer.frames if f["type"] == "ack" and f["of"] == "send"]
        assert len(acks) == MAX_GENERATIONS
        await peer.send(type="ping")  # the socket stays open
        await peer.wait_for(lambda f: f == {"type": "ack", "of": "ping"})
        await cancel_all(http, live, token, ids)
        await peer.close()
    assert running(live, user_id) == 0


async def test_new_conversations_per_hour(env: tuple[Live, FakeGemini]) -> None:
    live, fake = env
    token, user_id = await make_user_session("Prolific")
    made: list[str] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(NEW_PER_HOUR):
            fake.enqueue(QUICK)
            async with post_chat(http, live.url, token, message="new") as resp:
                assert resp.status == 200
                made.append(resp.headers["X-Conversation-Id"])
                await resp.read()
        resp = await start(http, live, token)
        await assert_refused(resp)
        assert int(resp.headers["Retry-After"]) > 3000  # the window is an hour
        assert running(live, user_id) == 0  # the refused send holds no generation slot
        peer = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        await peer.send(type="send", message="new over ws")
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "rate_limited", fault
        await peer.close()
        # Existing conversations go on.
        fake.enqueue(QUICK)
        async with post_chat(http, live.url, token, message="more", conversationId=made[0]) as resp:
            assert resp.status == 200
            await resp.read()
        await others_are_served(http, live)
        async with http.get(live.url + "/api/conversations", headers=bearer(token)) as resp:
            assert len((await resp.json())["conversations"]) == NEW_PER_HOUR


async def test_subscriptions_per_socket_are_capped(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, user_id = await make_user_session("Watcher")
    ids = await conversations(user_id, MAX_SUBSCRIPTIONS + 2)
    async with aiohttp.ClientSession() as http:
        peer = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        for conversation_id in ids[:MAX_SUBSCRIPTIONS]:
            await peer.send(type="subscribe", conversationId=conversation_id)
            await peer.wait_for(
                lambda f, c=conversation_id: f["type"] == "subscribed" and f["conversationId"] == c
            )
        await peer.send(type="subscribe", conversationId=ids[-1])
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "too_many_subscriptions", fault
        # A send that would subscribe the socket to one more conversation is refused too.
        await peer.send(type="send", conversationId=ids[-2], message="x")
        await peer.wait_for(
            lambda f: (
                f["type"] == "fault" and f is not fault and f["code"] == "too_many_subscriptions"
            )
        )
        assert running(live, user_id) == 0
        # Re-subscribing to a followed conversation is no new subscription.
        seen = len(peer.frames)
        await peer.send(type="subscribe", conversationId=ids[0])
        await peer.wait_for(
            lambda f: (
                f["type"] == "subscribed"
                and f["conversationId"] == ids[0]
                and any(g is f for g in peer.frames[seen:])
            )
        )
        assert not [f for f in peer.frames[seen:] if f["type"] == "fault"]
        # Unsubscribing makes room; the socket stayed open throughout.
        await peer.send(type="unsubscribe", conversationId=ids[1])
        await peer.wait_for(lambda f: f.get("of") == "unsubscribe")
        await peer.send(type="subscribe", conversationId=ids[-1])
        await peer.wait_for(lambda f: f["type"] == "subscribed" and f["conversationId"] == ids[-1])
        assert peer.close_code is None
        await peer.close()


async def test_a_busy_conversation_answers_409_even_at_the_limit(
    env: tuple[Live, FakeGemini],
) -> None:
    """CONTRACT: a conversation already generating answers 409 ``conversation_busy``."""
    live, _ = env
    token, user_id = await make_user_session("Busy at the limit")
    ids = await conversations(user_id, MAX_GENERATIONS)
    async with aiohttp.ClientSession() as http:
        answers = [await start(http, live, token, conversationId=c) for c in ids]
        assert [r.status for r in answers] == [200] * MAX_GENERATIONS
        again = await start(http, live, token, conversationId=ids[0])
        assert again.status == 409, await again.text()
        assert (await again.json())["code"] == "conversation_busy"
        await cancel_all(http, live, token, ids)
        for resp in [*answers, again]:
            resp.close()
    assert running(live, user_id) == 0
