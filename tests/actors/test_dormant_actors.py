"""Idle actors stop even while subscribed; their subscriptions live on (issue 15, item 12).

On main at cd5206b one socket subscribed to N conversations kept N actors alive forever
(task, mailbox, history cache: ~170 KB each). Now an actor with nothing to do stops after
``CERO_ACTOR_IDLE_TIMEOUT`` whoever watches; its log (epoch, seq, replay buffer,
subscribers) stays in the registry as a dormant record, and the next actor of the
conversation adopts it: subscribers see no gap and no ``reset``, cursors still resume,
presence is still told, and delete still ends the subscription.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from server.core.app_keys import REGISTRY
from server.storage.chat_store import create_conversation
from tests import live_clients
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import Live
from tests.live_clients import WsPeer, check_seq, token_text

pytestmark = pytest.mark.asyncio(loop_scope="module")

IDLE = 0.3


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {
        "actor_idle_timeout": IDLE,
        "ws_max_subscriptions": 1000,
        # One socket subscribes to 150 conversations in one go (the probe's case).
        "ws_frame_burst": 1000,
    }


async def chat(
    http: aiohttp.ClientSession, live: Live, token: str, **body: Any
) -> list[dict[str, Any]]:
    return await live_clients.chat(http, live.url, token, **{"aiModel": "demo", **body})


async def peer(http: aiohttp.ClientSession, live: Live, token: str) -> WsPeer:
    return WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()


async def test_subscribed_idle_actor_stops_and_the_stream_goes_on(live: Live) -> None:
    token, _ = await make_user_session("Dormouse")
    registry = live.app[REGISTRY]
    async with aiohttp.ClientSession() as http:
        first = await chat(http, live, token, message="one")
        conversation_id = first[0]["data"]["conversationId"]
        ws = await peer(http, live, token)
        await ws.send(type="subscribe", conversationId=conversation_id)
        subscribed = await ws.wait_for(lambda f: f["type"] == "subscribed")
        # Stopped although subscribed; the log is kept.
        await until(lambda: registry.peek(conversation_id) is None)
        dormant = registry.peek_dormant(conversation_id)
        assert dormant is not None and dormant.hub.epoch == subscribed["epoch"]
        cursor = f"{dormant.hub.epoch}:{dormant.hub.last_seq}"

        # The next turn is published to the same subscription, in sequence.
        second = await chat(http, live, token, message="two", conversationId=conversation_id)
        done = await ws.wait_for(lambda f: f["type"] == "done")
        assert registry.peek_dormant(conversation_id) is None  # adopted by the new actor
        events = ws.of(conversation_id)
        assert {e["epoch"] for e in events} == {subscribed["epoch"]}
        assert not [e for e in events if e["type"] == "reset"]
        assert not [f for f in ws.frames if f["type"] in ("unsubscribed", "fault")]
        check_seq(events)
        assert events[0]["seq"] == subscribed["seq"] + 1
        turn = [e["type"] for e in events if e["type"] not in ("token", "presence")]
        assert turn == ["message", "init", "done"], turn
        assert token_text(events, done["messageId"]) == done["fullText"]
        assert second[-1]["data"]["fullText"] == done["fullText"]

        # A cursor taken while dormant resumes: the log never broke.
        other = await peer(http, live, token)
        await other.send(type="subscribe", conversationId=conversation_id, after=cursor)
        ack = await other.wait_for(lambda f: f["type"] == "subscribed")
        assert ack["recovered"] is True and ack["epoch"] == subscribed["epoch"]
        await other.wait_for(lambda f: f["type"] == "done")
        replayed = [e for e in other.of(conversation_id) if e["type"] != "presence"]
        assert replayed[0]["seq"] == int(cursor.rpartition(":")[2]) + 1
        check_seq(other.of(conversation_id))
        await other.close()
        await ws.close()
    await until(lambda: registry.peek_dormant(conversation_id) is None)


async def test_presence_unsubscribe_and_delete_while_dormant(live: Live) -> None:
    token, _ = await make_user_session("Sleepy")
    registry = live.app[REGISTRY]
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live, token, message="hi")
        conversation_id = lines[0]["data"]["conversationId"]
        a, b = await peer(http, live, token), await peer(http, live, token)
        for ws in (a, b):
            await ws.send(type="subscribe", conversationId=conversation_id)
            await ws.wait_for(lambda f: f["type"] == "subscribed")
        await a.wait_for(lambda f: f["type"] == "presence" and f["viewers"] == 2)
        await until(lambda: registry.peek_dormant(conversation_id) is not None)
        assert registry.peek(conversation_id) is None

        # A viewer leaving a dormant conversation is still told to the others.
        await b.send(type="unsubscribe", conversationId=conversation_id)
        ack = await b.wait_for(lambda f: f.get("of") == "unsubscribe")
        assert ack["unsubscribed"] is True
        presence = await a.wait_for(lambda f: f["type"] == "presence" and f["viewers"] == 1)
        check_seq(a.of(conversation_id))
        assert registry.peek(conversation_id) is None  # told without waking an actor

        # Delete ends the subscription of a dormant conversation.
        async with http.delete(
            f"{live.url}/api/conversations/{conversation_id}", headers=bearer(token)
        ) as resp:
            assert resp.status in (200, 204)
        gone = await a.wait_for(lambda f: f["type"] == "unsubscribed")
        assert gone["conversationId"] == conversation_id and presence["seq"] > 0
        assert registry.peek_dormant(conversation_id) is None
        await a.close()
        await b.close()


async def test_one_socket_on_many_conversations_holds_no_actor(live: Live) -> None:
    """The probe's case, scaled: one socket subscribed to many conversations."""
    count = 150
    token, user_id = await make_user_session("Hoarder")
    registry = live.app[REGISTRY]
    ids = [str((await create_conversation(user_id, f"c{i}"))["id"]) for i in range(count)]
    async with aiohttp.ClientSession() as http:
        ws = await peer(http, live, token)
        for conversation_id in ids:
            await ws.send(type="subscribe", conversationId=conversation_id)
        await ws.wait_for(lambda f: f["type"] == "subscribed" and f["conversationId"] == ids[-1])
        for conversation_id in ids[:10]:
            await chat(http, live, token, message="x", conversationId=conversation_id)
        await until(lambda: not any(registry.peek(c) for c in ids))
        assert all(registry.peek_dormant(c) is not None for c in ids)
        # ... and each still streams to the socket when used again.
        done = await chat(http, live, token, message="again", conversationId=ids[-1])
        frame = await ws.wait_for(lambda f: f["type"] == "done" and f["conversationId"] == ids[-1])
        assert frame["fullText"] == done[-1]["data"]["fullText"]
        await ws.close()
    await until(lambda: not any(registry.peek_dormant(c) for c in ids))
