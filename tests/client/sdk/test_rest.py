"""The library's REST side against the live app (both engines): every call round trip,
the chat stream's tokens adding up to ``fullText``, and refusals raised as typed errors
carrying the contract's ``code``, ``error``, ``field`` and ``retryAfter``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from client.sdk import ApiError, CeroClient, NotFound, RateLimited, Unauthorized
from client.sdk.errors import api_error
from client.sdk.wire import ConversationEvent
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def chat(cero: CeroClient, message: str, **kw: str) -> list[ConversationEvent]:
    return [event async for event in cero.chat(message, **kw)]


async def test_chat_stream_tokens_add_up_to_full_text(cero: CeroClient) -> None:
    events = await chat(cero, "hello there", client_message_id="sdk-1")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message" and kinds[-1] == "done", kinds
    init = next(e for e in events if e["type"] == "init")
    done = events[-1]
    assert done["type"] == "done"
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert tokens and "".join(tokens) == done["fullText"]
    assert done["messageId"] == init["messageId"]
    seqs = [e["seq"] for e in events if e["type"] not in ("presence",)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The stored answer is the same text.
    stored = await cero.messages(init["conversationId"])
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"] == done["fullText"]
    # A retry with the same key starts nothing new and gets the same generation.
    again = await chat(cero, "hello there", client_message_id="sdk-1")
    assert any(e["type"] == "done" and e["fullText"] == done["fullText"] for e in again)
    assert len((await cero.messages(init["conversationId"]))["messages"]) == 2


async def test_rest_round_trips(cero: CeroClient, tmp_path: Path) -> None:
    me = await cero.whoami()
    assert me["name"] == "Sdk" and isinstance(me["id"], str)
    catalog = await cero.models()
    assert any(m["id"] == "demo" for m in catalog["models"])
    assert isinstance(catalog["default"], str)

    ids = []
    for n in range(3):
        events = await chat(cero, f"oak number {n}")
        ids.append(events[0]["conversationId"])
    listed = [c["id"] async for c in cero.conversations(page_size=2)]  # two pages
    assert sorted(listed) == sorted(ids)
    first = await cero.conversations_page(limit=2)
    assert first["nextCursor"] is not None and len(first["conversations"]) == 2

    renamed = await cero.rename(ids[0], "Oaks  and   beeches")
    assert renamed["shortTitle"] == "Oaks and beeches"
    assert (await cero.messages(ids[0]))["conversation"]["shortTitle"] == "Oaks and beeches"
    with_text = await cero.update_conversation(ids[0], instructions="Answer briefly.")
    assert with_text["instructions"] == "Answer briefly."
    tree = await cero.tree(ids[0])
    assert len(tree["messages"]) == 2

    assert await cero.instructions() is None
    assert await cero.set_instructions("  I like trees. ") == "I like trees."
    assert await cero.instructions() == "I like trees."
    assert await cero.set_instructions(None) is None

    hits = [r async for r in cero.search("oak", page_size=1)]
    assert {r["conversationId"] for r in hits} >= set(ids[1:])
    assert all("«" in r["snippet"] for r in hits)

    assert await cero.cancel(ids[1]) is False  # nothing running

    # Export one conversation to a file, import it back as a new one.
    target = await cero.export(tmp_path / "one.json", conversation_id=ids[1])
    exported = orjson.loads(target.read_bytes())
    assert exported["format"] == "cero-export"
    assert [p.name for p in tmp_path.iterdir()] == ["one.json"]  # no partial file left
    imported = await cero.import_file(target)
    assert [c["importedFrom"] for c in imported] == [ids[1]]
    assert imported[0]["id"] != ids[1]
    markdown = await cero.export(tmp_path / "all.md", format="markdown")
    assert "**You**" in markdown.read_text()

    assert await cero.delete(ids[2]) is True
    with pytest.raises(NotFound):
        await cero.messages(ids[2])


async def test_typed_errors(live: Live, cero: CeroClient, tmp_path: Path) -> None:
    async with CeroClient(live.url, "not-a-token") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            await stranger.whoami()
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"
    assert unauthorized.value.request_id

    with pytest.raises(NotFound) as missing:
        await cero.messages("no-such-conversation")
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    with pytest.raises(ApiError) as bad:
        await cero.conversations_page(limit=0)
    assert (bad.value.status, bad.value.code, bad.value.field) == (400, "invalid_request", "limit")

    with pytest.raises(ApiError) as blank:  # refused before any event streams
        await chat(cero, "   ")
    assert (blank.value.code, blank.value.field) == ("invalid_request", "message")

    with pytest.raises(ApiError) as unknown:
        await chat(cero, "hi", ai_model="no-such-model")
    assert unknown.value.code == "unknown_model"

    with pytest.raises(ApiError) as broken:
        await cero.import_file(b'{"format": "cero-export", "version": 99, "conversations": []}')
    assert broken.value.code == "invalid_import"

    with pytest.raises(NotFound):
        await cero.export(tmp_path / "x.json", conversation_id="missing")
    assert list(tmp_path.iterdir()) == []  # no file, not even a partial one


async def test_error_bodies_of_both_shapes() -> None:
    limited = api_error(
        429,
        b'{"error":"Too many","code":"rate_limited","retryAfter":3}',
        {"Retry-After": "3", "X-Request-ID": "r1"},
    )
    assert isinstance(limited, RateLimited)
    assert (limited.code, limited.error, limited.retry_after) == ("rate_limited", "Too many", 3)
    oauth = api_error(400, b'{"error":"slow_down","error_description":"Polling too fast"}')
    assert (oauth.code, oauth.error) == ("slow_down", "Polling too fast")
    proxy = api_error(502, b"<html>bad gateway</html>", {"Retry-After": "7"})
    assert (proxy.code, proxy.retry_after) == ("http_502", 7.0)


async def test_branch_operations_stream_like_chat(cero: CeroClient) -> None:
    # A send cancelled right after its init: an answer that can be continued.
    events: list[ConversationEvent] = []
    async for event in cero.chat("a long answer please"):
        events.append(event)
        if event["type"] == "init":
            assert await cero.cancel(event["conversationId"], event["generationId"]) is True
    init = next(e for e in events if e["type"] == "init")
    assert events[-1]["type"] == "cancelled"
    conversation, answer, question = (
        init["conversationId"],
        init["messageId"],
        init["userMessageId"],
    )

    continued = [e async for e in cero.continue_(conversation, answer)]
    done = continued[-1]
    assert done["type"] == "done" and done["messageId"] == answer
    assert "".join(e["text"] for e in continued if e["type"] == "token") == done["fullText"]

    regenerated = [e async for e in cero.regenerate(conversation, question)]
    assert regenerated[0]["type"] == "init" and regenerated[0].get("action") == "regenerate"
    assert regenerated[-1]["type"] == "done"

    edited = [e async for e in cero.edit(conversation, question, "a short one")]
    assert [e["type"] for e in edited][:2] == ["message", "init"]
    assert edited[-1]["type"] == "done"
    tree = await cero.tree(conversation)
    assert len(tree["messages"]) == 5  # two questions, three answers
    switched = await cero.switch(conversation, answer)
    assert switched["activeLeafId"] == answer
    with pytest.raises(ApiError) as not_continuable:
        await drain_all(cero.continue_(conversation, answer))  # it ended with STOP now
    assert (not_continuable.value.status, not_continuable.value.code) == (409, "not_continuable")


async def drain_all(stream: AsyncIterator[ConversationEvent]) -> None:
    async for _ in stream:
        pass
