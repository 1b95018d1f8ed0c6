"""``clientMessageId`` is unique per user (CONTRACT, Chat), on both engines.

The same key sent again — to another conversation, to none, over HTTP or the WebSocket,
concurrently, or through another server process on the same database — answers the
original turn and never stores a second user message or starts a second generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from actors.store import ClientMessageTaken, NewGeneration
from server.storage.batch_writer import WRITER, BatchWriter
from server.storage.chat_store import PiccoloConversationStore, create_conversation
from server.storage.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import WsPeer, chat, post_chat, read_ndjson
from tests.server_process import serve_many

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Env:
    live: Live
    http: aiohttp.ClientSession
    alice: str
    alice_id: str
    bob: str

    async def chat(self, token: str, **body: Any) -> list[dict[str, Any]]:
        return await chat(self.http, self.live.url, token, **body)

    async def conversation(self, token: str, message: str) -> str:
        """A conversation holding one finished turn sent without a key."""
        lines = await self.chat(token, message=message, aiModel="demo")
        return str(lines[0]["data"]["conversationId"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(live: Live) -> AsyncIterator[Env]:
    alice, alice_id = await make_user_session("Alice")
    bob, _ = await make_user_session("Bob")
    async with aiohttp.ClientSession() as http:
        yield Env(live, http, alice, alice_id, bob)


async def keyed(key: str) -> list[dict[str, Any]]:
    """Every stored message sent with ``key`` (by anyone)."""
    return list(await Message.select().where(Message.client_message_id == key).run())


async def answers_of(generation_id: str) -> list[dict[str, Any]]:
    return list(
        await Message.select()
        .where((Message.generation_id == generation_id) & (Message.role == "assistant"))
        .run()
    )


def init_of(lines: list[dict[str, Any]]) -> dict[str, Any]:
    assert lines[0]["topic"] == "init", lines[:2]
    data: dict[str, Any] = lines[0]["data"]
    return data


async def test_same_key_in_another_conversation_answers_the_original(env: Env) -> None:
    first = await env.chat(env.alice, message="keyed turn", aiModel="demo", clientMessageId="k-1")
    original = init_of(first)
    other = await env.conversation(env.alice, "an unrelated conversation")
    assert other != original["conversationId"]

    retried = await env.chat(
        env.alice,
        message="keyed turn",
        aiModel="demo",
        clientMessageId="k-1",
        conversationId=other,
    )
    assert init_of(retried)["generationId"] == original["generationId"]
    assert init_of(retried)["conversationId"] == original["conversationId"]
    assert retried[-1]["topic"] == "done"
    assert retried[-1]["data"]["fullText"] == first[-1]["data"]["fullText"]

    # Without a conversationId the retry finds the one turn, not "one of them".
    again = await env.chat(env.alice, message="keyed turn", aiModel="demo", clientMessageId="k-1")
    assert init_of(again)["generationId"] == original["generationId"]

    assert len(await keyed("k-1")) == 1
    assert len(await answers_of(original["generationId"])) == 1
    in_other = await Message.select().where(Message.conversation_id == other).run()
    assert len(in_other) == 2  # the unrelated turn only


async def test_concurrent_sends_to_two_conversations_make_one_generation(env: Env) -> None:
    x = await env.conversation(env.alice, "conversation x")
    y = await env.conversation(env.alice, "conversation y")
    results = await asyncio.gather(
        *(
            env.chat(
                env.alice,
                message="raced",
                aiModel="demo",
                clientMessageId="k-race",
                conversationId=target,
            )
            for target in (x, y, x, y)
        )
    )
    generations = {init_of(lines)["generationId"] for lines in results}
    assert len(generations) == 1
    (generation_id,) = generations
    assert len(await keyed("k-race")) == 1
    assert len(await answers_of(generation_id)) == 1


async def test_websocket_send_with_a_used_key_answers_the_original(env: Env) -> None:
    first = await env.chat(env.alice, message="over http", aiModel="demo", clientMessageId="k-ws")
    original = init_of(first)
    other = await env.conversation(env.alice, "the socket's conversation")
    ws = await env.http.ws_connect(env.live.url + "/api/ws", headers=bearer(env.alice))
    peer = WsPeer(ws).start()
    try:
        await peer.send(
            type="send",
            message="over the socket",
            aiModel="demo",
            clientMessageId="k-ws",
            conversationId=other,
        )
        ack = await peer.wait_for(lambda f: f["type"] == "ack" and f["of"] == "send")
        assert ack.get("retried") is True, ack
        assert ack["generationId"] == original["generationId"]
        assert ack["conversationId"] == original["conversationId"]
    finally:
        await peer.close()
    assert len(await keyed("k-ws")) == 1


async def test_the_key_belongs_to_its_user(env: Env) -> None:
    alice = init_of(
        await env.chat(env.alice, message="mine", aiModel="demo", clientMessageId="k-shared")
    )
    bob = init_of(
        await env.chat(env.bob, message="mine too", aiModel="demo", clientMessageId="k-shared")
    )
    assert bob["generationId"] != alice["generationId"]
    assert bob["conversationId"] != alice["conversationId"]
    assert len(await keyed("k-shared")) == 2


async def test_the_database_refuses_a_users_key_twice(env: Env) -> None:
    """The unique index decides, whatever a process's lock knew (another process)."""
    store = PiccoloConversationStore(env.live.app[WRITER])
    x = str((await create_conversation(env.alice_id, "x"))["id"])
    y = str((await create_conversation(env.alice_id, "y"))["id"])
    await store.start_generation(
        NewGeneration(x, "once", generation_id="g" * 24, client_message_id="k-db", model="demo")
    )
    with pytest.raises(ClientMessageTaken):
        await store.start_generation(
            NewGeneration(
                y, "twice", generation_id="h" * 24, client_message_id="k-db", model="demo"
            )
        )
    rows = await keyed("k-db")
    assert [row["conversation_id"] for row in rows] == [x]
    assert await Message.select().where(Message.conversation_id == y).run() == []
    # Refused as a whole: no orphan answer row either.
    assert await Message.select().where(Message.generation_id == "h" * 24).run() == []


# -- the migration, on a database that already holds the bug's duplicates -----------------

BEFORE_PER_USER = "2026-11-25T23:59:00:000000"


async def test_migration_keeps_the_earliest_of_legacy_duplicates(
    live: Live, database_url: str, tmp_path: Path
) -> None:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from server.storage import db
    from server.storage.db import ENGINE
    from tests.conftest import create_pg_database, drop_pg_database

    fresh = (
        f"sqlite:///{tmp_path / 'legacy.db'}"
        if database_url.startswith("sqlite")
        else await create_pg_database()
    )
    engine = db.engine_for_url(fresh)
    try:
        db.use_engine(engine)
        db.prepare_sqlite(engine)
        await db.start_pool(engine, max_size=2)
        result = await run_forwards(app_name="cero", migration_id=BEFORE_PER_USER)
        assert result.success, result.message
        sql = [
            "INSERT INTO cero_user (id, name, email_verified, created_at, updated_at) "
            "VALUES ('u1', 'U', false, '2026-11-01T00:00:00+00:00', '2026-11-01T00:00:00+00:00')",
            "INSERT INTO conversation (id, user_id, short_title, created_at, updated_at) "
            "VALUES ('cx', 'u1', '', '2026-11-01T00:00:00+00:00', '2026-11-01T00:00:00+00:00')",
            "INSERT INTO conversation (id, user_id, short_title, created_at, updated_at) "
            "VALUES ('cy', 'u1', '', '2026-11-01T00:00:00+00:00', '2026-11-01T00:00:00+00:00')",
            # The same key in two conversations of one user, as the bug allowed.
            "INSERT INTO message (id, conversation_id, role, content, status, client_message_id, "
            "created_at, updated_at) VALUES ('m1', 'cx', 'user', 'hi', 'complete', 'dup', "
            "'2026-11-01T00:00:01+00:00', '2026-11-01T00:00:01+00:00')",
            "INSERT INTO message (id, conversation_id, role, content, status, client_message_id, "
            "created_at, updated_at) VALUES ('m2', 'cy', 'user', 'hi', 'complete', 'dup', "
            "'2026-11-01T00:00:02+00:00', '2026-11-01T00:00:02+00:00')",
        ]
        for statement in sql:
            await engine.run_ddl(statement)
        assert len(await db.migrate(engine)) >= 2
        rows = await engine.run_ddl(
            "SELECT id, user_id FROM message WHERE client_message_id = 'dup' ORDER BY id"
        )
        assert [(r["id"], r["user_id"]) for r in rows] == [("m1", "u1"), ("m2", None)]
        writer = BatchWriter(engine)
        await writer.start()
        try:
            with pytest.raises(ClientMessageTaken):
                await PiccoloConversationStore(writer).start_generation(
                    NewGeneration(
                        "cy", "again", generation_id="g" * 24, client_message_id="dup", model="demo"
                    )
                )
        finally:
            await writer.close()
    finally:
        await db.close_pool(engine)
        db.use_engine(live.app[ENGINE])
        if not fresh.startswith("sqlite"):
            await drop_pg_database(fresh)


# -- two server processes on one database ------------------------------------------------


@pytest.mark.slow
async def test_two_processes_racing_one_key_make_one_generation(
    env: Env, database_url: str, tmp_path: Path
) -> None:
    x = await env.conversation(env.alice, "process race x")
    y = await env.conversation(env.alice, "process race y")
    settings = {"CERO_DEMO_TOKEN_DELAY": "0.01", "CERO_LOG_LEVEL": "error"}
    async with (
        serve_many(2, database_url, cwd=tmp_path, env=settings) as servers,
        aiohttp.ClientSession() as http,
    ):

        async def send(url: str, conversation_id: str, key: str) -> dict[str, Any]:
            async with post_chat(
                http,
                url,
                env.alice,
                message="raced across processes",
                aiModel="demo",
                clientMessageId=key,
                conversationId=conversation_id,
            ) as r:
                assert r.status == 200, await r.text()
                return init_of(await read_ndjson(r))

        for round_ in range(5):
            key = f"k-proc-{round_}"
            inits = await asyncio.gather(send(servers[0].url, x, key), send(servers[1].url, y, key))
            assert inits[0]["generationId"] == inits[1]["generationId"], inits
            assert len(await keyed(key)) == 1
            assert len(await answers_of(inits[0]["generationId"])) == 1
