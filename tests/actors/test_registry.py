"""Actor lifecycle: idle stop and respawn, supervision after a crash, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from server.core.app_keys import REGISTRY
from server.storage.db import ENGINE
from server.storage.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import Live, live_app
from tests.live_clients import WsPeer, chat, post_chat
from tests.process_stats import scrape

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live_short_idle(database_url: str) -> AsyncIterator[Live]:
    async with live_app(database_url, actor_idle_timeout=0.3) as live:
        yield live


async def _chat(
    http: aiohttp.ClientSession, live: Live, token: str, **body: object
) -> list[dict[str, Any]]:
    return await chat(http, live.url, token, **body)


async def test_idle_actor_stops_and_respawns_with_new_epoch(live_short_idle: Live) -> None:
    live = live_short_idle
    token, _ = await make_user_session("Idle")
    registry = live.app[REGISTRY]
    async with aiohttp.ClientSession() as http:
        lines = await _chat(http, live, token, message="hello", aiModel="demo")
        conversation_id = lines[0]["data"]["conversationId"]
        actor = registry.peek(conversation_id)
        assert actor is not None
        epoch = actor.hub.epoch
        # A viewer does not keep it alive past the idle timeout, only its log (dormant:
        # tests/actors/test_dormant_actors.py); the log goes when the last subscriber does.
        ws = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        await ws.send(type="subscribe", conversationId=conversation_id)
        await ws.wait_for(lambda f: f["type"] == "subscribed")
        # Its own idle stop (0.3 s): the actor's task ends.
        await asyncio.wait_for(asyncio.shield(actor.task), 5)
        assert registry.peek(conversation_id) is None
        dormant = registry.peek_dormant(conversation_id)
        assert dormant is not None and dormant.hub is actor.hub
        await ws.close()
        await until(lambda: registry.peek_dormant(conversation_id) is None, 5)
        assert registry.peek(conversation_id) is None
        ws = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        await ws.send(
            type="subscribe", conversationId=conversation_id, after=f"{epoch}:{actor.hub.last_seq}"
        )
        ack = await ws.wait_for(lambda f: f["type"] == "subscribed")
        assert ack["epoch"] != epoch and ack["recovered"] is False
        reset = await ws.wait_for(lambda f: f["type"] == "reset")
        assert reset["epoch"] == ack["epoch"]
        await ws.close()


async def test_failed_command_leaves_the_conversation_usable(live_short_idle: Live) -> None:
    """A database failure fails that command (500), not the conversation."""
    live = live_short_idle
    token, _ = await make_user_session("Crashy")
    registry = live.app[REGISTRY]
    engine = live.app[ENGINE]
    async with aiohttp.ClientSession() as http:
        lines = await _chat(http, live, token, message="before", aiModel="demo")
        conversation_id = lines[0]["data"]["conversationId"]
        await engine.run_ddl("ALTER TABLE message RENAME TO message_away")
        try:
            async with post_chat(
                http,
                live.url,
                token,
                message="boom",
                aiModel="demo",
                conversationId=conversation_id,
            ) as r:
                assert r.status == 500
                assert (await r.json())["code"] == "internal"
        finally:
            await engine.run_ddl("ALTER TABLE message_away RENAME TO message")
        assert registry.crashes == 0
        lines = await _chat(
            http, live, token, message="after", aiModel="demo", conversationId=conversation_id
        )
        assert lines[-1]["topic"] == "done", lines[-1]
        rows = (
            await Message.select(Message.content, Message.role)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at)
            .run()
        )
        user_turns = [r["content"] for r in rows if r["role"] == "user"]
        assert user_turns == ["before", "after"], user_turns


async def test_crashed_actor_is_supervised_and_respawned(live_short_idle: Live) -> None:
    """The actor task dies mid-answer: viewers get `error`, the row is stored `error`, and
    the next use spawns a fresh actor."""
    live = live_short_idle
    token, _ = await make_user_session("Dies")
    registry = live.app[REGISTRY]
    async with aiohttp.ClientSession() as http:
        lines = await _chat(http, live, token, message="first", aiModel="demo")
        conversation_id = lines[0]["data"]["conversationId"]
        live.app[REGISTRY].deps.providers["demo"].token_delay = 0.05  # type: ignore[attr-defined]
        try:
            ws = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
            await ws.send(
                type="send", conversationId=conversation_id, message="long", aiModel="demo"
            )
            ack = await ws.wait_for(lambda f: f["type"] == "ack")
            await ws.wait_for(lambda f: f["type"] == "token")
            actor = registry.peek(conversation_id)
            assert actor is not None
            actor.task.cancel()  # the actor loop dies (as an unexpected crash would)
            error = await ws.wait_for(lambda f: f["type"] == "error")
            assert error["code"] == "internal" and error["messageId"] == ack["messageId"]
            await ws.wait_for(lambda f: f["type"] == "unsubscribed")
            assert registry.crashes == 1
            row = await Message.select().where(Message.id == ack["messageId"]).first().run()
            assert row is not None and row["status"] == "error"
            assert row["content"] == "".join(f["text"] for f in ws.frames if f["type"] == "token")
            await ws.close()
        finally:
            live.app[REGISTRY].deps.providers["demo"].token_delay = 0.002  # type: ignore[attr-defined]
        lines = await _chat(
            http, live, token, message="again", aiModel="demo", conversationId=conversation_id
        )
        assert lines[-1]["topic"] == "done"
        assert registry.peek(conversation_id) is not actor


async def test_metrics_follow_tokens_connections_and_actors(live_short_idle: Live) -> None:
    """The families move with what the test does: every token event of a chat is counted,
    an open socket or chat response is a connection while it lasts, and a conversation's
    actor is live while it answers and not once it has stopped idle."""
    live = live_short_idle
    token, _ = await make_user_session("Metered")
    ws_open, ndjson_open = (
        'cero_connections{transport="ws"}',
        'cero_connections{transport="ndjson"}',
    )

    async def actors_are(count: float) -> bool:
        return (await scrape(http, live.url))["cero_live_actors"] == count

    async with aiohttp.ClientSession() as http:
        # Every actor of the tests before has stopped idle (0.3 s).
        await until(lambda: actors_are(0), 5, what="no live actor")
        before = await scrape(http, live.url)
        lines = await _chat(http, live, token, message="count these tokens", aiModel="demo")
        after = await scrape(http, live.url)
        streamed = sum(1 for line in lines if line["topic"] == "token")
        assert streamed > 0
        counted = after["cero_tokens_streamed_total"] - before["cero_tokens_streamed_total"]
        assert counted == streamed, (counted, streamed)
        conversation_id = lines[0]["data"]["conversationId"]
        await until(lambda: actors_are(0), 5, what="the chat's actor stopped idle")

        async with post_chat(
            http, live.url, token, message="again", aiModel="demo", conversationId=conversation_id
        ) as r:
            assert r.status == 200, await r.text()
            await r.content.readline()  # init: the actor is answering
            answering = await scrape(http, live.url)
            await r.read()
        assert answering["cero_live_actors"] == 1
        assert answering[ndjson_open] == before.get(ndjson_open, 0) + 1

        ws = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        await ws.send(type="subscribe", conversationId=conversation_id)
        await ws.wait_for(lambda f: f["type"] == "subscribed")
        opened = await scrape(http, live.url)
        assert opened[ws_open] == before.get(ws_open, 0) + 1
        assert opened[ndjson_open] == before.get(ndjson_open, 0)
        await ws.close()

        async def socket_closed() -> bool:
            return (await scrape(http, live.url))[ws_open] == before.get(ws_open, 0)

        await until(socket_closed, what="the socket no longer counted")
        await until(lambda: actors_are(0), 5, what="the actor stopped idle again")
