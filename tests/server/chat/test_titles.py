"""Generated titles (docs/api.md, Conversations; issue 24 item 4), on both engines (and in
cluster mode with ``CERO_TEST_CLUSTER_REDIS_URL``): after the first answer the
conversation's model writes a title, which is stored and reaches the account channel as
``conversation.renamed``; a second answer never writes another; a user's rename wins,
whether it comes before the first answer ends or while the model is writing; an imported
conversation keeps its title. The Gemini stand-in's title is the one that arrives.
The text rules themselves: tests/actors/test_title_rules.py.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from server.storage.tables import Conversation, Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import WsPeer, chat, post_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEEP = importlib.import_module("migrations.cero_2026_12_07t11_10_01_000000")

#: A first message and the demo model's title of it.
FIRST = "Hi! can you plan a trip to Lisbon for me in May?"
FIRST_TITLE = "Plan a trip to Lisbon"


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    # The demo model's pace in production: an answer takes most of a second, long enough
    # for a rename to arrive before it ends.
    return {"generate_titles": True, "demo_token_delay": 0.02}


class Account:
    """One user with an account-channel WebSocket subscriber."""

    def __init__(self, live: Live, http: aiohttp.ClientSession, token: str, peer: WsPeer):
        self.live = live
        self.http = http
        self.token = token
        self.peer = peer

    def events(self, kind: str, conversation_id: str) -> list[dict[str, Any]]:
        return [
            f
            for f in self.peer.frames
            if f.get("channel") == "account"
            and f.get("type") == kind
            and f.get("conversationId") == conversation_id
        ]

    async def wait(self, kind: str, conversation_id: str, timeout: float = 15) -> dict[str, Any]:
        return await self.peer.wait_for(
            lambda f: f.get("type") == kind and f.get("conversationId") == conversation_id,
            timeout,
        )

    async def send(self, message: str, conversation_id: str | None = None, **body: Any) -> str:
        """A turn to its end; the conversation's id."""
        if conversation_id is not None:
            body["conversationId"] = conversation_id
        lines = await chat(self.http, self.live.url, self.token, message=message, **body)
        assert lines[-1]["topic"] == "done", lines[-1]
        return str(lines[0]["data"]["conversationId"])

    async def barrier(self) -> None:
        """A new conversation's title has arrived: the titles of every answer that ended
        before its answer have been decided (the channel reports answers in order)."""
        cid = await self.send("barrier: tell me about oak trees", aiModel="demo")
        await self.wait("conversation.renamed", cid)

    async def stored(self, conversation_id: str) -> dict[str, Any]:
        row = (
            await Conversation.select(Conversation.short_title, Conversation.title_source)
            .where(Conversation.id == conversation_id)
            .first()
            .run()
        )
        assert row is not None
        return dict(row)

    async def listed(self, conversation_id: str) -> str:
        async with self.http.get(
            f"{self.live.url}/api/conversations", headers=bearer(self.token)
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        (found,) = [c for c in body["conversations"] if c["id"] == conversation_id]
        return str(found["shortTitle"])

    async def rename(self, conversation_id: str, title: str) -> None:
        async with self.http.patch(
            f"{self.live.url}/api/conversations/{conversation_id}",
            json={"shortTitle": title},
            headers=bearer(self.token),
        ) as resp:
            assert resp.status == 200, await resp.text()


@asynccontextmanager
async def account(live: Live, name: str) -> AsyncIterator[Account]:
    token, _ = await make_user_session(name)
    async with aiohttp.ClientSession() as http:
        peer = WsPeer(await http.ws_connect(f"{live.url}/api/ws?token={token}")).start()
        await peer.send(type="subscribe", channel="account")
        await peer.wait_for(lambda f: f.get("type") == "subscribed")
        try:
            yield Account(live, http, token, peer)
        finally:
            await peer.close()


# -- the demo model ------------------------------------------------------------------------


async def test_the_demo_title_arrives_live_is_stored_and_listed(live: Live) -> None:
    async with account(live, "Titles") as me:
        cid = await me.send(FIRST, aiModel="demo")
        renamed = await me.wait("conversation.renamed", cid)
        assert renamed["conversation"]["shortTitle"] == FIRST_TITLE
        created = me.events("conversation.created", cid)[0]
        assert created["conversation"]["shortTitle"] == FIRST  # the provisional title
        kinds = [
            f["type"]
            for f in me.peer.frames
            if f.get("conversationId") == cid and f.get("channel") == "account"
        ]
        assert kinds == [
            "conversation.created",
            "answer.started",
            "answer.ended",
            "conversation.renamed",
        ], kinds
        # A title is not activity: the conversation keeps its place in the list.
        ended = me.events("answer.ended", cid)[0]
        assert renamed["conversation"]["updatedAt"] == ended["conversation"]["updatedAt"]
        assert await me.stored(cid) == {"short_title": FIRST_TITLE, "title_source": "model"}
        assert await me.listed(cid) == FIRST_TITLE
        async with me.http.get(
            f"{live.url}/api/conversations/{cid}/messages", headers=bearer(me.token)
        ) as resp:
            assert (await resp.json())["conversation"]["shortTitle"] == FIRST_TITLE

        # The second answer writes no other title.
        await me.send("and what about Porto in June?", cid)
        await me.barrier()
        assert len(me.events("conversation.renamed", cid)) == 1
        assert (await me.stored(cid))["short_title"] == FIRST_TITLE


async def test_a_rename_before_the_first_answer_ends_wins(live: Live) -> None:
    async with account(live, "Renamer") as me:
        async with post_chat(
            me.http, live.url, me.token, message="explain how ferns reproduce", aiModel="demo"
        ) as resp:
            assert resp.status == 200
            init = orjson.loads(await resp.content.readline())
            cid = init["data"]["conversationId"]
            await me.rename(cid, "My fern notes")  # while the answer streams
            rest = (await resp.read()).decode().split("\n")
        assert orjson.loads([line for line in rest if line.strip()][-1])["topic"] == "done"
        await me.wait("answer.ended", cid)
        await me.barrier()
        renamed = me.events("conversation.renamed", cid)
        assert [e["conversation"]["shortTitle"] for e in renamed] == ["My fern notes"]
        assert await me.stored(cid) == {"short_title": "My fern notes", "title_source": "user"}
        assert await me.listed(cid) == "My fern notes"
        # Later answers leave the user's title alone too.
        await me.send("and mosses?", cid)
        await me.barrier()
        assert len(me.events("conversation.renamed", cid)) == 1
        assert (await me.stored(cid))["short_title"] == "My fern notes"


async def test_a_failed_answer_writes_no_title_and_the_next_complete_one_does(
    live: Live,
) -> None:
    async with account(live, "Cancels") as me:
        async with post_chat(
            me.http, live.url, me.token, message="list every river in Europe", aiModel="demo"
        ) as resp:
            init = orjson.loads(await resp.content.readline())
            cid = init["data"]["conversationId"]
            async with me.http.post(
                f"{live.url}/api/conversations/{cid}/cancel", json={}, headers=bearer(me.token)
            ) as cancel:
                assert (await cancel.json())["cancelled"] is True
            await resp.read()
        ended = await me.wait("answer.ended", cid)
        assert ended["status"] == "cancelled"
        await me.barrier()
        assert me.events("conversation.renamed", cid) == []
        assert await me.stored(cid) == {
            "short_title": "list every river in Europe",
            "title_source": "message",
        }
        await me.send("just the longest ones then", cid)
        renamed = await me.wait("conversation.renamed", cid)
        # Written from the user message the complete answer answered.
        assert renamed["conversation"]["shortTitle"] == "Just the longest ones then"


async def test_an_imported_conversation_keeps_its_title(live: Live) -> None:
    async with account(live, "Importer") as me:
        cid = await me.send("plan a garden with oaks", aiModel="demo")
        await me.wait("conversation.renamed", cid)
        async with me.http.get(
            f"{live.url}/api/conversations/{cid}/export", headers=bearer(me.token)
        ) as resp:
            assert resp.status == 200
            exported = orjson.loads(await resp.read())
        exported["conversations"][0]["shortTitle"] = "Garden, as exported"
        # The file's last answer is dropped: the import's first answer is the one below.
        messages = exported["conversations"][0]["messages"]
        exported["conversations"][0]["messages"] = messages[:1]
        exported["conversations"][0]["activeLeafId"] = messages[0]["id"]
        async with me.http.post(
            f"{live.url}/api/import", data=orjson.dumps(exported), headers=bearer(me.token)
        ) as resp:
            assert resp.status == 200, await resp.text()
            (imported,) = (await resp.json())["conversations"]
        new = imported["id"]
        assert await me.stored(new) == {
            "short_title": "Garden, as exported",
            "title_source": "kept",
        }
        await me.send("which oaks grow fastest?", new)
        await me.barrier()
        assert me.events("conversation.renamed", new) == []
        assert (await me.stored(new))["short_title"] == "Garden, as exported"


async def test_the_migration_keeps_the_titles_of_answered_conversations(live: Live) -> None:
    """Conversations stored before titles were generated: those with an answer become
    ``kept``; one still waiting for its first answer stays ``message``."""
    _, user_id = await make_user_session("Old titles")
    answered, waiting = "oldtitleanswered" + "x" * 8, "oldtitlewaiting" + "x" * 9
    for cid in (answered, waiting):
        await Conversation.insert(
            Conversation(id=cid, user_id=user_id, short_title=f"old {cid[8:14]}")
        ).run()
        await Message.insert(
            Message(id=cid[:-1] + "u", conversation_id=cid, role="user", content="old")
        ).run()
    await Message.insert(
        Message(id=answered[:-1] + "a", conversation_id=answered, role="assistant", content="x")
    ).run()
    await (await KEEP.forwards()).run()
    sources = {
        row["id"]: row["title_source"]
        for row in await Conversation.select(Conversation.id, Conversation.title_source)
        .where(Conversation.id.is_in([answered, waiting]))
        .run()
    }
    assert sources == {answered: "kept", waiting: "message"}


# -- the Gemini stand-in -------------------------------------------------------------------


def _title_requests(fake: FakeGemini) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path.endswith(":generateContent")]


async def test_the_gemini_title_is_the_models(database_url: str) -> None:
    message = "plan a trip to Lisbon in May please"
    async with live_with_gemini(database_url, generate_titles=True) as (live, fake):
        async with account(live, "Gemini titles") as me:
            cid = await me.send(message)
            renamed = await me.wait("conversation.renamed", cid)
            # The stand-in answered '"Plan A Trip To Lisbon."' and a newline: cleaned.
            assert renamed["conversation"]["shortTitle"] == FakeGemini.title_of(message)
            assert renamed["conversation"]["shortTitle"] == "Plan A Trip To Lisbon"
            assert (await me.stored(cid))["short_title"] == "Plan A Trip To Lisbon"
            (asked,) = _title_requests(fake)
            system = asked["systemInstruction"]["parts"][0]["text"]
            assert system.startswith("Write a title of at most 6 words")
            text = asked["contents"][0]["parts"][0]["text"]
            assert text.startswith(f"First message:\n{message}\n\nFirst answer:\nYou said:")

            # What a model may wrap a title in is cleaned off; a long one is cut between
            # words (the answer has its script, the title request its own).
            fake.enqueue(Script(chunks=["Ferns are plants."]))
            fake.enqueue_title(
                Script(
                    chunks=[
                        '**Title:** "Ferns, mosses and other spore plants of the northern '
                        'hemisphere forests"\nA second line'
                    ]
                ),
            )
            other = await me.send("tell me about ferns")
            renamed = await me.wait("conversation.renamed", other)
            title = renamed["conversation"]["shortTitle"]
            assert title == "Ferns, mosses and other spore plants of the"

            # A title request that fails keeps the provisional title, is not retried, and
            # a second answer does not ask again.
            fake.enqueue(Script(chunks=["Moss answer."]))
            fake.enqueue_title(Script(error_before=[503]))
            failed = await me.send("tell me about mosses")
            await me.wait("answer.ended", failed)
            await me.barrier()
            fake.title_scripts.clear()
            asked_before = len(_title_requests(fake))
            assert me.events("conversation.renamed", failed) == []
            assert await me.stored(failed) == {
                "short_title": "tell me about mosses",
                "title_source": "model",
            }
            await me.send("and lichens?", failed)
            await me.barrier()
            assert len(_title_requests(fake)) == asked_before  # (the barrier's is the demo's)
            assert me.events("conversation.renamed", failed) == []


async def test_a_rename_while_the_model_writes_the_title_wins(database_url: str) -> None:
    async with live_with_gemini(database_url, generate_titles=True) as (live, fake):
        async with account(live, "Slow titles") as me:
            release = asyncio.Event()
            fake.enqueue(Script(chunks=["An answer."]))
            fake.enqueue_title(Script(chunks=["A Title From The Model"], release=release))
            cid = await me.send("what is a lichen?")
            for _ in range(500):  # the title request has arrived and waits
                if _title_requests(fake):
                    break
                await asyncio.sleep(0.01)
            assert _title_requests(fake)
            await me.rename(cid, "Lichens (mine)")
            release.set()
            await me.barrier()
            renamed = me.events("conversation.renamed", cid)
            assert [e["conversation"]["shortTitle"] for e in renamed] == ["Lichens (mine)"]
            assert await me.stored(cid) == {"short_title": "Lichens (mine)", "title_source": "user"}
