"""The live feed that prefers the WebSocket and falls back to SSE, behind a reverse proxy
that refuses upgrades (``403``, ``405``, ``400``, or closing the connection) and passes
plain HTTP through, against the live app (both engines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from client.sdk import CeroClient, CeroSocket, UpgradeRefused
from client.sdk.fallback import LiveFeed
from client.sdk.wire import LiveEvent
from tests.client.sdk.conftest import check_contiguous
from tests.client.sdk.proxies import Refusal, RefusingProxy
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", params=[403, 405, 400, "close"])
async def proxy(live: Live, request: pytest.FixtureRequest) -> AsyncIterator[RefusingProxy]:
    refusal: Refusal = request.param
    running = RefusingProxy(live.url, refusal)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def until_both_ends(feed: LiveFeed, conversation: str) -> list[LiveEvent]:
    """Events until the conversation's ``done`` and the account's ``answer.ended`` of that
    same generation (the two logs are ordered each on its own, not among them)."""
    got: list[LiveEvent] = []
    done: str | None = None
    ended: set[str] = set()
    async for event in feed:
        got.append(event)
        if event["type"] == "done" and event["conversationId"] == conversation:
            done = event.get("generationId")
        elif event["type"] == "answer.ended":
            ended.add(event["generationId"])
        if done is not None and done in ended:
            return got
    raise AssertionError(f"the feed ended early: {got}")


async def follow_one_answer(feed: LiveFeed, cero: CeroClient, conversation: str) -> None:
    reader = asyncio.get_running_loop().create_task(until_both_ends(feed, conversation))
    answer = [e async for e in cero.chat("through the proxy", conversation_id=conversation)]
    got = await asyncio.wait_for(reader, 30)
    log = [e for e in got if "channel" not in e]
    check_contiguous(log)
    done = answer[-1]
    assert done["type"] == "done"
    assert "".join(e["text"] for e in log if e["type"] == "token") == done["fullText"]
    generation = done.get("generationId")
    account = [
        e["type"]
        for e in got
        if e.get("channel") == "account" and e.get("generationId") == generation
    ]
    assert account == ["answer.started", "answer.ended"]


async def new_conversation(cero: CeroClient) -> str:
    events = [e async for e in cero.chat("start")]  # the whole answer: nothing left running
    return events[0]["conversationId"]


async def test_falls_back_to_sse_behind_a_proxy_that_refuses_upgrades(
    token: str, cero: CeroClient, proxy: RefusingProxy
) -> None:
    conversation = await new_conversation(cero)
    with pytest.raises(UpgradeRefused) as refused:
        await CeroSocket(proxy.url, token).connect()
    assert refused.value.status == (None if proxy.refusal == "close" else proxy.refusal)
    async with (
        CeroClient(proxy.url, token) as behind_proxy,
        await behind_proxy.follow([conversation], account=True) as feed,
    ):
        assert feed.transport == "sse"
        assert proxy.refused == 2 and proxy.passed >= 2
        await follow_one_answer(feed, cero, conversation)
        cursors = feed.cursors()
    assert set(cursors) == {conversation, "account"}


async def test_uses_the_websocket_where_it_passes(cero: CeroClient) -> None:
    conversation = await new_conversation(cero)
    async with await cero.follow([conversation], account=True) as feed:
        assert feed.transport == "websocket"
        await follow_one_answer(feed, cero, conversation)
    async with await cero.follow([conversation], prefer="sse") as feed:
        assert feed.transport == "sse"
