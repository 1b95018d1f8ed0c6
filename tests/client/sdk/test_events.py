"""The library's SSE followers against the live app (both engines): a conversation's stream
cut mid-answer (the TCP connection aborted under it, as a network failure does) reconnects
with ``Last-Event-ID`` and the replay fills the gap exactly; the account channel likewise;
a deleted conversation and an ended session stop the follower with typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from client.sdk import CeroClient, NotFound, Unauthorized
from client.sdk.events import EventStream
from client.sdk.wire import AccountEvent, ConversationEvent
from tests.auth_helpers import bearer
from tests.client.sdk.conftest import check_contiguous
from tests.client.sdk.proxies import Relay
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def relay(live: Live) -> AsyncIterator[Relay]:
    parts = urlsplit(live.url)
    assert parts.hostname and parts.port
    running = Relay(parts.hostname, parts.port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def drain(stream: AsyncIterable[Any]) -> list[Any]:
    return [event async for event in stream]


async def first_conversation(cero: CeroClient) -> str:
    events = [e async for e in cero.chat("start")]
    return events[0]["conversationId"]


async def test_sse_resumes_after_a_cut_without_gap_or_duplicate(
    live: Live, token: str, cero: CeroClient, relay: Relay
) -> None:
    conversation = await first_conversation(cero)
    async with CeroClient(relay.url, token) as through_relay:
        stream = through_relay.conversation_events(conversation)
        got: list[ConversationEvent] = []
        reader = asyncio.get_running_loop().create_task(take_until_done(stream, got, relay))
        await stream.wait_open()
        sent = asyncio.get_running_loop().create_task(
            drain(cero.chat("tell me more", conversation_id=conversation))
        )
        answer = await asyncio.wait_for(sent, 30)
        await asyncio.wait_for(reader, 30)
        await stream.close()
    assert stream.connections == 2, "one cut, one reconnect"
    done = answer[-1]
    assert done["type"] == "done"
    check_contiguous(got)
    tokens = [e for e in got if e["type"] == "token"]
    assert "".join(e["text"] for e in tokens) == done["fullText"]
    assert [e["type"] for e in got if e["type"] not in ("presence", "token")] == [
        "message",
        "init",
        "done",
    ]
    assert stream.cursor == f"{got[-1]['epoch']}:{got[-1]['seq']}"


async def take_until_done(
    stream: EventStream[ConversationEvent], got: list[ConversationEvent], relay: Relay
) -> None:
    """Collect events; after the third token, cut the connection under the stream."""
    tokens = 0
    async for event in stream:
        got.append(event)
        if event["type"] == "token":
            tokens += 1
            if tokens == 3:
                assert relay.cut() >= 1
        if event["type"] == "done":
            return


async def test_account_channel_over_sse_resumes_after_a_cut(
    token: str, cero: CeroClient, relay: Relay
) -> None:
    async with CeroClient(relay.url, token) as through_relay:
        stream = through_relay.account_events()
        got: list[AccountEvent] = []
        seen = asyncio.Event()

        async def read() -> None:
            async for event in stream:
                got.append(event)
                seen.set()
                # Ours (a generated title may rename it first).
                if event["type"] == "conversation.renamed" and (
                    event["conversation"]["shortTitle"] == "Renamed while cut"
                ):
                    return

        reader = asyncio.get_running_loop().create_task(read())
        await stream.wait_open()
        conversation = await first_conversation(cero)
        await asyncio.wait_for(seen.wait(), 10)
        relay.cut()
        await cero.rename(conversation, "Renamed while cut")  # published while reconnecting
        await asyncio.wait_for(reader, 30)
        await stream.close()
    assert stream.connections == 2
    check_contiguous(got)
    kinds = [e["type"] for e in got]
    assert kinds[0] == "conversation.created" and kinds[-1] == "conversation.renamed", kinds
    assert "answer.started" in kinds and "answer.ended" in kinds
    assert all(e.get("conversationId") == conversation for e in got)
    last = got[-1]
    assert last["type"] == "conversation.renamed"
    assert last["conversation"]["shortTitle"] == "Renamed while cut"


async def test_resume_from_a_cursor_and_reset_for_a_bad_one(cero: CeroClient) -> None:
    conversation = await first_conversation(cero)
    history = await cero.messages(conversation)
    assert len(history["messages"]) == 2
    stream = cero.conversation_events(conversation, after="garbage:1")
    first = await anext(aiter(stream))
    await stream.close()
    assert first["type"] == "reset"  # the caller refetches, then follows live


async def test_deleted_conversation_and_ended_session_stop_the_follower(
    live: Live, token: str, cero: CeroClient
) -> None:
    conversation = await first_conversation(cero)
    stream = cero.conversation_events(conversation, max_attempts=3)
    reader = asyncio.get_running_loop().create_task(drain(stream))
    await stream.wait_open()
    assert await cero.delete(conversation)
    with pytest.raises(NotFound):
        await asyncio.wait_for(reader, 30)

    account = cero.account_events()
    reader = asyncio.get_running_loop().create_task(drain(account))
    await account.wait_open()
    async with (
        aiohttp.ClientSession() as http,
        http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as resp,
    ):
        assert resp.status == 200
    with pytest.raises(Unauthorized):
        await asyncio.wait_for(reader, 30)


async def test_retry_is_honoured_and_an_overlapping_replay_is_deduplicated() -> None:
    """Against a stand-in event stream (not Cero): the first connection sets ``retry: 50``
    and drops after seq 2; the second, asked for ``Last-Event-ID: e:2``, replays from seq 1
    (an overlap a server may send), then 3, then ends for good with a 404."""
    seen_ids: list[str | None] = []

    async def events(request: web.Request) -> web.StreamResponse:
        seen_ids.append(request.headers.get("Last-Event-ID"))
        if len(seen_ids) > 2:
            raise web.HTTPNotFound(
                text='{"error":"Conversation not found","code":"not_found"}',
                content_type="application/json",
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        seqs = [1, 2] if len(seen_ids) == 1 else [1, 2, 3]
        head = "\ufeffretry: 50\r\n\r\n" if len(seen_ids) == 1 else ": replay\r\n"
        body = head + "".join(
            f"id: e:{seq}\revent: token\r"
            f'data: {{"type":"token","conversationId":"c","epoch":"e","seq":{seq},\r'
            f'data: "text":"t{seq}"}}\r\r'
            for seq in seqs
        )
        await response.write(body.encode())
        return response  # ends the stream: the follower reconnects

    app = web.Application()
    app.router.add_get("/api/conversations/c/events", events)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with CeroClient(f"http://127.0.0.1:{port}", "t") as cero:
            stream = cero.conversation_events("c")
            got: list[ConversationEvent] = []
            with pytest.raises(NotFound):
                async for event in stream:
                    got.append(event)
    finally:
        await runner.cleanup()
    # The data lines join with LF: still one JSON object each.
    assert [(e["seq"], e.get("text")) for e in got] == [(1, "t1"), (2, "t2"), (3, "t3")]
    assert seen_ids == [None, "e:2", "e:3"]
    assert stream.reconnect_delay == 0.05  # the stream's retry: 50 (ms)
