"""Gemini through the whole server: the real google-genai SDK against the local stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import toon_format

from actors.compression import extract_block
from server.storage.tables import Message
from standins.gemini import FakeGemini, HttpError, Script
from tests import live_clients
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import WsPeer

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini, str]]:
    async with live_with_gemini(
        database_url, gemini_first_chunk_timeout=0.5, gemini_chunk_timeout=0.5
    ) as (live, fake):
        token, _ = await make_user_session("Gem")
        yield live, fake, token


async def chat(live: Live, token: str, **body: Any) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        return await live_clients.chat(http, live.url, token, **body)


async def test_long_conversation_sends_toon_block_and_verbatim_tail(
    env: tuple[Live, FakeGemini, str],
) -> None:
    live, fake, token = env
    first = await chat(live, token, message="message 0", aiModel="demo")
    conversation_id = first[0]["data"]["conversationId"]
    for i in range(1, 20):
        await chat(
            live, token, message=f"message {i}", aiModel="demo", conversationId=conversation_id
        )
    fake.enqueue(Script(chunks=["ok"]))
    await chat(live, token, message="the new one", aiModel=MODEL, conversationId=conversation_id)
    body = fake.requests[-1].body
    stored = (
        await Message.select(Message.role, Message.content)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at)
        .run()
    )
    history = stored[:-1]  # without the answer being generated
    assert len(history) == 41
    contents = body["contents"]
    tail = history[-len(contents) :]
    assert [c["parts"][0]["text"] for c in contents] == [m["content"] for m in tail]
    assert contents[-1] == {"role": "user", "parts": [{"text": "the new one"}]}
    assert 5 <= len(contents) <= 6 and contents[0]["role"] == "user"
    system = body["systemInstruction"]["parts"][0]["text"]
    block = extract_block(system)
    assert block is not None and block.startswith(f"[{41 - len(contents)}]{{role,content}}:")
    decoded = toon_format.decode(block)
    assert decoded == [
        {"role": m["role"], "content": m["content"]} for m in history[: 41 - len(contents)]
    ]


async def test_429_then_success_gives_one_clean_answer(env: tuple[Live, FakeGemini, str]) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=["One", " answer"], error_before=[429]))
    async with aiohttp.ClientSession() as http:
        peer = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token))).start()
        await peer.send(type="send", message="rate me", aiModel=MODEL)
        done = await peer.wait_for(lambda f: f["type"] == "done")
        tokens = [f["text"] for f in peer.frames if f["type"] == "token"]
        assert tokens == ["One", " answer"] and done["fullText"] == "One answer"
        await peer.close()


async def test_three_429s_end_rate_limited(env: tuple[Live, FakeGemini, str]) -> None:
    live, fake, token = env
    before = len(fake.requests)
    fake.enqueue(Script(chunks=["never"], error_before=[HttpError(429, "quota", "0s")] * 3))
    lines = await chat(live, token, message="quota", aiModel=MODEL)
    assert lines[-1] == {
        "topic": "error",
        "data": {"error": lines[-1]["data"]["error"], "code": "rate_limited"},
    }
    assert len(fake.requests) - before == 3
    assert fake.scripts[0].chunks == ["never"]  # the answer was never asked for
    fake.scripts.clear()
    row = await Message.select().where(Message.id == lines[0]["data"]["messageId"]).first().run()
    assert row is not None and row["status"] == "error" and row["content"] == ""


async def test_stall_is_upstream_timeout(env: tuple[Live, FakeGemini, str]) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=["a", "b", "c"], stall_after=1, stall_seconds=5))
    lines = await chat(live, token, message="stall", aiModel=MODEL)
    assert lines[-1]["topic"] == "error" and lines[-1]["data"]["code"] == "upstream_timeout"
    row = await Message.select().where(Message.id == lines[0]["data"]["messageId"]).first().run()
    assert row is not None and row["status"] == "error" and row["content"] == "a"


async def test_blocked_prompt_and_shut_down_model_successor(
    env: tuple[Live, FakeGemini, str],
) -> None:
    live, fake, token = env
    fake.enqueue(Script(block_reason="SAFETY"))
    lines = await chat(live, token, message="bad words", aiModel=MODEL)
    assert lines[-1]["data"]["code"] == "blocked"
    fake.enqueue(Script(chunks=["hi"]))
    lines = await chat(live, token, message="old model", aiModel="gemini-1.5-flash")
    assert lines[0]["data"]["aiModel"] != "gemini-1.5-flash"
    assert fake.requests[-1].path.endswith(f"{lines[0]['data']['aiModel']}:streamGenerateContent")
