"""The library's WebSocket client against the live app (both engines): commands and their
answers, a socket the server closes mid-answer (``4008``, as for a slow consumer; ``1001``)
or that the network drops reconnects and resubscribes from its cursors with no gap and no
duplicate, the account channel, and ``4001`` (signed out) ending it with a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from client.sdk import ApiError, CeroClient, CeroSocket, NotFound, SessionEnded
from client.sdk.wire import LiveEvent
from server.transports.ws import SOCKETS
from tests.auth_helpers import bearer
from tests.client.sdk.conftest import check_contiguous
from tests.client.sdk.proxies import Relay
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def collect_until(
    socket: CeroSocket, got: list[LiveEvent], stop: Any, on_token: Any = None
) -> None:
    tokens = 0
    async for event in socket:
        got.append(event)
        if event["type"] == "token":
            tokens += 1
            if on_token is not None:
                await on_token(tokens)
        if stop(event):
            return


async def close_server_sockets(live: Live, code: int) -> int:
    sockets = [ws for ws in live.app[SOCKETS] if not ws.closed]
    for ws in sockets:
        await ws.close(code=code, message=b"closed by the test")
    return len(sockets)


async def new_conversation(cero: CeroClient) -> str:
    events = [e async for e in cero.chat("start")]
    return events[0]["conversationId"]


async def test_commands_and_their_answers(live: Live, cero: CeroClient) -> None:
    async with cero.socket() as socket:
        await socket.ping()
        with pytest.raises(NotFound) as missing:
            await socket.subscribe("no-such-conversation")
        assert missing.value.code == "not_found" and missing.value.status == 0
        with pytest.raises(ApiError) as refused:
            await socket.send("   ")
        assert refused.value.code in ("invalid_frame", "invalid_request")

        ack = await socket.send("hello over the socket", client_message_id="ws-1")
        assert ack["of"] == "send" and ack["retried"] is False
        conversation = ack["conversationId"]
        got: list[LiveEvent] = []
        await asyncio.wait_for(collect_until(socket, got, lambda e: e["type"] == "done"), 30)
        check_contiguous([e for e in got if e.get("conversationId") == conversation])
        done = got[-1]
        assert done["type"] == "done"
        text = "".join(e["text"] for e in got if e["type"] == "token")
        assert text == done["fullText"]
        assert socket.subscriptions == {conversation}

        # A second send, cancelled by generation id.
        ack2 = await socket.send("and again", conversation_id=conversation)
        assert await socket.cancel(conversation, ack2["generationId"]) is True
        assert await socket.cancel(conversation, ack2["generationId"]) is False
        more: list[LiveEvent] = []
        await asyncio.wait_for(collect_until(socket, more, lambda e: e["type"] == "cancelled"), 30)
        # Branches: regenerate the first answer, then switch back to it.
        first_answer = ack["messageId"]
        regen = await socket.regenerate(conversation, first_answer)
        assert regen["of"] == "regenerate" and regen["messageId"] != first_answer
        await asyncio.wait_for(collect_until(socket, more, lambda e: e["type"] == "done"), 30)
        switched = await socket.switch(conversation, first_answer)
        # Down from it to its newest leaf: the cancelled answer of the second send.
        assert switched["messageId"] == first_answer
        assert switched["activeLeafId"] == ack2["messageId"]
        check_contiguous(got + more)

        assert await socket.unsubscribe(conversation) is True
        assert await socket.unsubscribe(conversation) is False
        assert socket.subscriptions == frozenset()


@pytest.mark.parametrize("how", ["4008", "1001", "network"])
async def test_reconnect_resubscribes_without_gap_or_duplicate(
    live: Live, cero: CeroClient, how: str
) -> None:
    first = await new_conversation(cero)
    second = await new_conversation(cero)
    async with cero.socket() as socket:
        await socket.subscribe(first)
        await socket.subscribe(second)
        await socket.subscribe_account()

        async def cut(tokens: int) -> None:
            if tokens != 3:
                return
            if how == "network":
                await socket.abort()
            else:
                assert await close_server_sockets(live, int(how)) == 1

        got: list[LiveEvent] = []
        sends = [
            asyncio.get_running_loop().create_task(drain(cero, "more please", conversation))
            for conversation in (first, second)
        ]
        ended: set[tuple[str, str]] = set()

        def both_done(event: LiveEvent) -> bool:
            # Logs are ordered each on its own, not among them: wait for both ends of both.
            if event["type"] in ("answer.ended", "done"):
                ended.add((event["type"], event["conversationId"]))
            return len(ended) == 4

        await asyncio.wait_for(collect_until(socket, got, both_done, cut), 30)
        answers = await asyncio.gather(*sends)
        assert socket.connections == 2
        expected_code = {"4008": 4008, "1001": 1001, "network": None}[how]
        if expected_code is not None:
            assert socket.last_close_code == expected_code
        assert socket.subscriptions == {first, second, "account"}
        for conversation, answer in zip((first, second), answers, strict=True):
            events = [e for e in got if e.get("conversationId") == conversation]
            log = [e for e in events if "channel" not in e]
            check_contiguous(log)
            text = "".join(e["text"] for e in log if e["type"] == "token")
            assert text == answer[-1]["fullText"]
        check_contiguous([e for e in got if e.get("channel") == "account"])
        # Still live after the reconnect, and the cursors moved on.
        assert socket.cursor(first) == cursor_of(got_last(got, first))
        await socket.ping()


def cursor_of(event: Mapping[str, Any]) -> str:
    return f"{event['epoch']}:{event['seq']}"


def got_last(got: list[LiveEvent], conversation: str) -> LiveEvent:
    return [e for e in got if e.get("conversationId") == conversation and "channel" not in e][-1]


async def drain(cero: CeroClient, message: str, conversation: str) -> list[Any]:
    return [e async for e in cero.chat(message, conversation_id=conversation)]


def renamed_to(title: str) -> Any:
    """Ours, not a generated title's rename."""

    def stop(event: LiveEvent) -> bool:
        if event["type"] != "conversation.renamed":
            return False
        return event["conversation"]["shortTitle"] == title

    return stop


async def test_account_channel_over_the_socket(cero: CeroClient) -> None:
    async with cero.socket() as socket:
        subscribed = await socket.subscribe_account()
        assert subscribed.get("channel") == "account"
        conversation = await new_conversation(cero)
        await cero.rename(conversation, "Socket title")
        got: list[LiveEvent] = []
        await asyncio.wait_for(collect_until(socket, got, renamed_to("Socket title")), 30)
        kinds = [e["type"] for e in got]
        assert kinds[0] == "conversation.created" and "answer.ended" in kinds, kinds
        check_contiguous(got)
        # Resuming from a cursor replays exactly what came after it.
        middle = got[1]
        async with cero.socket() as again:
            answer = await again.subscribe_account(after=cursor_of(middle))
            assert answer["recovered"] is True
            replayed: list[LiveEvent] = []
            await asyncio.wait_for(collect_until(again, replayed, renamed_to("Socket title")), 30)
            assert replayed == got[2:]


async def test_session_end_stops_the_socket(live: Live, token: str, cero: CeroClient) -> None:
    socket = cero.socket()
    await socket.connect()
    await socket.subscribe_account()
    async with (
        aiohttp.ClientSession() as http,
        http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as resp,
    ):
        assert resp.status == 200
    with pytest.raises(SessionEnded):
        async for _ in socket:
            pass
    assert socket.last_close_code == 4001 and socket.connections == 1
    with pytest.raises(SessionEnded):
        await socket.ping()
    await socket.close()
    with pytest.raises(SessionEnded):  # no reconnect with a dead token
        await CeroSocket(live.url, token).connect()


async def test_a_subscription_whose_conversation_is_deleted_ends_with_unsubscribed(
    live: Live, token: str, cero: CeroClient
) -> None:
    parts = urlsplit(live.url)
    assert parts.hostname and parts.port
    relay = Relay(parts.hostname, parts.port)
    await relay.start()
    try:
        kept = await new_conversation(cero)
        gone_while_away = await new_conversation(cero)
        gone_while_here = await new_conversation(cero)
        async with CeroSocket(relay.url, token) as socket:
            for conversation in (kept, gone_while_away, gone_while_here):
                await socket.subscribe(conversation)
            # Deleted while the socket is connected: the server says `unsubscribed`.
            assert await cero.delete(gone_while_here)
            got: list[LiveEvent] = []
            await asyncio.wait_for(
                collect_until(socket, got, lambda e: e["type"] == "unsubscribed"), 30
            )
            assert got[-1].get("conversationId") == gone_while_here
            # Deleted while the socket is away: its resubscription is refused (not_found),
            # which the socket reports the same way; the others are followed again.
            relay.hold()
            relay.cut()
            assert await cero.delete(gone_while_away)
            relay.release()
            await asyncio.wait_for(
                collect_until(socket, got, lambda e: e["type"] == "unsubscribed"), 30
            )
            ended = got[-1]
            assert ended.get("conversationId") == gone_while_away
            assert ended.get("reason") == "not_found"
            assert socket.subscriptions == {kept} and socket.connections == 2
            ack = await socket.send("still here?", conversation_id=kept)
            await asyncio.wait_for(collect_until(socket, got, lambda e: e["type"] == "done"), 30)
            assert got[-1].get("messageId") == ack["messageId"]
    finally:
        await relay.stop()


async def test_a_cursor_that_cannot_be_replayed_gives_reset(cero: CeroClient) -> None:
    conversation = await new_conversation(cero)
    async with cero.socket() as socket:
        answer = await socket.subscribe(conversation, after="another-epoch:3")
        assert answer["recovered"] is False
        reset = await asyncio.wait_for(anext(aiter(socket)), 10)
        assert reset["type"] == "reset" and reset.get("conversationId") == conversation
        # The cursor moved to the reset's: a reconnect now resumes from there.
        assert socket.cursor(conversation) == cursor_of(reset)
        assert reset.get("epoch") != "another-epoch"
