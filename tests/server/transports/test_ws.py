"""WebSocket transport edge cases: faults, abuse, oversize frames, slow consumers, auth."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_app, live_with_gemini
from tests.live_clients import WsPeer, check_seq, new_conversation

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini, str]]:
    async with live_with_gemini(database_url, ws_max_frame=64 * 1024) as (live, fake):
        token, _ = await make_user_session("Wes")
        yield live, fake, token


async def _peer(live: Live, http: aiohttp.ClientSession, token: str) -> WsPeer:
    ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token), max_msg_size=0)
    return WsPeer(ws).start()


async def test_auth_by_query_and_subprotocol(env: tuple[Live, FakeGemini, str]) -> None:
    live, _, token = env
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{live.url}/api/ws?token={token}") as ws:
            await ws.send_str('{"type": "ping"}')
            assert orjson.loads((await ws.receive()).data) == {"type": "ack", "of": "ping"}
        async with http.ws_connect(
            live.url + "/api/ws", protocols=("cero.v1", f"bearer.{token}")
        ) as ws:
            assert ws.protocol == "cero.v1"
        async with http.ws_connect(live.url + "/api/ws", protocols=(f"bearer.{token}",)) as ws:
            assert ws.protocol == f"bearer.{token}"
        for protocols in ((), ("bearer.wrong",)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(live.url + "/api/ws", protocols=protocols)
            assert info.value.status == 401


async def test_bad_frames_fault_then_abuse_closes_1008(env: tuple[Live, FakeGemini, str]) -> None:
    live, _, token = env
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        for text in (
            "not json",
            "[1]",
            '{"type": 3}',
            '{"type": "dance"}',
            '{"type": "subscribe"}',
            '{"type": "send", "message": ""}',
        ):
            before = len(peer.frames)
            await peer.ws.send_str(text)
            await peer.wait_for(lambda f, n=before: len(peer.frames) > n)
            fault = peer.frames[before]
            assert fault["type"] == "fault" and fault["code"] and fault["error"], text
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")  # still open after faults
        for _ in range(30):
            await peer.ws.send_str("garbage")
        await asyncio.wait_for(peer._task, 5)  # type: ignore[arg-type]
        assert peer.close_code == 1008


async def test_oversized_frame_closes_1009(env: tuple[Live, FakeGemini, str]) -> None:
    live, _, token = env
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        await peer.ws.send_str('{"type": "send", "message": "' + "x" * 70_000 + '"}')
        await asyncio.wait_for(peer._task, 5)  # type: ignore[arg-type]
        assert peer.close_code == 1009


async def test_slow_consumer_does_not_delay_fast_one(env: tuple[Live, FakeGemini, str]) -> None:
    live, fake, token = env
    chunk = "y" * 4000  # 8 MB in all: more than the kernel and transport buffers hold
    fake.enqueue(Script(chunks=[f"{i:04d}{chunk}" for i in range(2000)], chunk_delay=0))
    async with aiohttp.ClientSession() as http:
        conversation_id = await new_conversation(http, live.url, token)
        # The slow peer: a tiny receive buffer, and it stops reading after `subscribed`.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.server.port))
        sock.setblocking(False)
        ws_url = live.url.replace("http", "ws") + "/api/ws"
        slow = await connect(
            ws_url, sock=sock, additional_headers=bearer(token), max_queue=1, max_size=None
        )
        await slow.send(
            orjson.dumps({"type": "subscribe", "conversationId": conversation_id}).decode()
        )
        subscribed = orjson.loads(await slow.recv())
        assert subscribed["type"] == "subscribed"
        fast = await _peer(live, http, token)
        await fast.send(type="subscribe", conversationId=conversation_id)
        await fast.wait_for(lambda f: f["type"] == "subscribed")
        await fast.send(type="send", conversationId=conversation_id, message="flood", aiModel=MODEL)
        done = await fast.wait_for(lambda f: f["type"] == "done", timeout=60)
        events = fast.of(conversation_id)
        check_seq(events)
        tokens = [e for e in events if e["type"] == "token"]
        assert sum(e.get("merged", 1) for e in tokens) == 2000
        assert "".join(e["text"] for e in tokens) == done["fullText"]
        # Now the slow peer reads what was buffered for it: it ends closed with 4008.
        last_cursor = None
        got: list[str] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                try:
                    frame = orjson.loads(await asyncio.wait_for(slow.recv(), 10))
                except TimeoutError:
                    raise AssertionError(f"no close after {len(got)} frames: {got[-3:]}") from None
                got.append(frame["type"])
                if "seq" in frame and frame["type"] not in ("subscribed",):
                    last_cursor = f"{frame['epoch']}:{frame['seq']}"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        assert last_cursor is not None
        # ... and resumes from its cursor: a replay (or a reset), then live.
        again = await _peer(live, http, token)
        await again.send(type="subscribe", conversationId=conversation_id, after=last_cursor)
        ack = await again.wait_for(lambda f: f["type"] == "subscribed")
        if ack["recovered"]:
            await again.wait_for(lambda f: f["type"] == "done")
        else:
            await again.wait_for(lambda f: f["type"] == "reset")
        await again.close()
        await fast.close()


async def test_retried_send_does_not_subscribe_twice(env: tuple[Live, FakeGemini, str]) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=[f"r{i} " for i in range(30)], chunk_delay=0.01))
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        await peer.send(type="send", message="hello", aiModel=MODEL, clientMessageId="dup-1")
        ack = await peer.wait_for(lambda f: f["type"] == "ack")
        await peer.wait_for(lambda f: f["type"] == "token")
        # The client did not trust the first ack and retries: same key, no conversationId.
        await peer.send(type="send", message="hello", aiModel=MODEL, clientMessageId="dup-1")
        acks = await peer.wait_for(
            lambda f: len([x for x in peer.frames if x["type"] == "ack"]) == 2
        )
        assert acks
        second = [f for f in peer.frames if f["type"] == "ack"][1]
        assert second["retried"] and second["generationId"] == ack["generationId"]
        await peer.wait_for(lambda f: f["type"] == "done")
        events = peer.of(ack["conversationId"])
        check_seq(events)  # no duplicates, no gaps
        await peer.send(type="unsubscribe", conversationId=ack["conversationId"])
        await peer.wait_for(lambda f: f["type"] == "ack" and f["of"] == "unsubscribe")
        from server.core.app_keys import REGISTRY

        actor = live.app[REGISTRY].peek(ack["conversationId"])
        assert actor is not None and actor.viewers == 0
        await peer.close()


async def test_shutdown_ends_generations_and_closes_sockets_1001(database_url: str) -> None:

    fake = FakeGemini()
    url = await fake.start()
    fake.enqueue(Script(chunks=[f"s{i} " for i in range(500)], chunk_delay=0.01))
    try:
        async with (
            live_app(database_url, gemini_api_key="k", gemini_base_url=url) as other,
            aiohttp.ClientSession() as http,
        ):
            token, _ = await make_user_session("Shut")
            peer = await _peer(other, http, token)
            await peer.send(type="send", message="long", aiModel=MODEL)
            ack = await peer.wait_for(lambda f: f["type"] == "ack")
            await peer.wait_for(lambda f: f["type"] == "token")
            await other.server.close()
            error = await peer.wait_for(lambda f: f["type"] == "error")
            assert error["code"] == "server_shutdown"
            await asyncio.wait_for(peer._task, 5)  # type: ignore[arg-type]
            assert peer.close_code == 1001
            from server.storage import db
            from server.storage.tables import Message

            db.use_engine(db.engine_for_url(database_url))
            row = await Message.select().where(Message.id == ack["messageId"]).first().run()
            assert row is not None and row["status"] == "interrupted"
    finally:
        await fake.stop()


async def test_cookie_handshake_needs_a_trusted_origin(env: tuple[Live, FakeGemini, str]) -> None:
    from tests.auth_helpers import session_cookie

    live, _, token = env
    cookie = session_cookie(live.settings, token)
    async with aiohttp.ClientSession() as http:
        for origin in ({}, {"Origin": "https://evil.example"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(live.url + "/api/ws", headers={**cookie, **origin})
            assert info.value.status == 403
        async with http.ws_connect(
            live.url + "/api/ws", headers={**cookie, "Origin": live.settings.public_url}
        ) as ws:
            await ws.send_str('{"type": "ping"}')
            assert orjson.loads((await ws.receive()).data) == {"type": "ack", "of": "ping"}
