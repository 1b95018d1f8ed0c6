"""WebSocket and SSE hardening (issues 9 and 15): sockets that outlive their session, the
frame-size boundary, unmasked client frames, ``ping`` → ``ack``, and nothing written after
a Close frame.

The raw client below speaks RFC 6455 over a plain socket, so that it can send what no
library sends (unmasked frames, a header announcing an oversized frame) and record every
server frame in arrival order, including what follows a Close.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import pytest_asyncio

from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_app, live_with_gemini
from tests.live_clients import WsPeer, new_conversation, post_chat, read_sse

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"
LIMIT = 1 << 20  # the default CERO_WS_MAX_FRAME
#: The contract's "within a second", plus scheduling slack for a loaded CI machine.
PROMPTLY = 2.0

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini]]:
    # The server's default retry backoff (0.5 s), as this module had before.
    async with live_with_gemini(database_url, gemini_retry_backoff=0.5) as (live, fake):
        yield live, fake


# -- a raw RFC 6455 client --------------------------------------------------------------


class RawWs:
    """A WebSocket client over a bare socket that records every server frame in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames: list[tuple[int, bytes]] = []  # (opcode, payload), arrival order
        self.eof = False

    @classmethod
    async def connect(cls, live: Live, token: str) -> RawWs:
        parts = urlsplit(live.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = (
            f"GET /api/ws HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        writer.write(head.encode())
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert response.startswith(b"HTTP/1.1 101"), response
        return cls(reader, writer)

    def send_frame(
        self, opcode: int, payload: bytes, *, masked: bool = True, declared: int | None = None
    ) -> None:
        """One FIN frame; ``declared`` announces another length than the payload's."""
        size = len(payload) if declared is None else declared
        head = bytes((0x80 | opcode,))
        bit = 0x80 if masked else 0
        if size < 126:
            head += bytes((bit | size,))
        elif size < 65536:
            head += bytes((bit | 126,)) + struct.pack("!H", size)
        else:
            head += bytes((bit | 127,)) + struct.pack("!Q", size)
        if masked:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.writer.write(head + payload)

    def send_json(self, **data: Any) -> None:
        self.send_frame(OP_TEXT, orjson.dumps(data))

    async def read_frame(self) -> tuple[int, bytes] | None:
        try:
            b1, b2 = await self.reader.readexactly(2)
            size = b2 & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not b2 & 0x80, "a server frame must not be masked"
            payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof = True
            return None
        frame = (b1 & 0x0F, payload)
        self.frames.append(frame)
        return frame

    async def json_until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                frame = await self.read_frame()
                assert frame is not None, "connection ended"
                if frame[0] == OP_TEXT:
                    data: dict[str, Any] = orjson.loads(frame[1])
                    if predicate(data):
                        return data

        return await asyncio.wait_for(scan(), timeout)

    async def record(self, seconds: float) -> None:
        """Record frames for ``seconds`` (or until the server ends the connection),
        never answering the server's Close: a peer that does not is what lets a buggy
        server go on writing."""
        deadline = time.monotonic() + seconds
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.read_frame(), left)
            except TimeoutError:
                return

    def close_code(self) -> int | None:
        for opcode, payload in self.frames:
            if opcode == OP_CLOSE:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        return None

    def data_after_close(self) -> list[bytes]:
        """Data frames the server wrote after its Close frame (RFC 6455 §5.5.1: none)."""
        seen_close = False
        late = []
        for opcode, payload in self.frames:
            if opcode == OP_CLOSE:
                seen_close = True
            elif seen_close and opcode < 0x8:
                late.append(payload[:80])
        return late

    def close(self) -> None:
        self.writer.close()


async def _peer(live: Live, http: aiohttp.ClientSession, token: str) -> WsPeer:
    ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token), max_msg_size=0)
    return WsPeer(ws).start()


async def _closed_within(peer: WsPeer, seconds: float) -> int | None:
    await asyncio.wait_for(asyncio.shield(peer._task), seconds)  # type: ignore[arg-type]
    return peer.close_code


async def _session_id(live: Live, http: aiohttp.ClientSession, token: str) -> str:
    async with http.get(live.url + "/api/auth/get-session", headers=bearer(token)) as resp:
        body = await resp.json()
    return str(body["session"]["id"])


def _long_answer(fake: FakeGemini, n: int = 400, delay: float = 0.01) -> None:
    fake.enqueue(Script(chunks=[f"t{i} " for i in range(n)], chunk_delay=delay))


# -- issue 9: ping is acknowledged like every other frame -------------------------------


async def test_ping_is_answered_by_one_ack(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, _ = await make_user_session("Pinger")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(live.url + "/api/ws", headers=bearer(token)) as ws:
            await ws.send_str('{"type": "ping"}')
            await ws.send_str('{"type": "ping"}')
            first = orjson.loads((await ws.receive(timeout=5)).data)
            second = orjson.loads((await ws.receive(timeout=5)).data)
            assert first == second == {"type": "ack", "of": "ping"}
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)  # one answer per frame, no `pong`


# -- issue 15 bug 7: the frame-size limit is inclusive ----------------------------------


async def test_frame_of_exactly_the_limit_is_accepted(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, _ = await make_user_session("Big")
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        prefix, suffix = '{"type": "dance", "pad": "', '"}'
        frame = prefix + "x" * (LIMIT - len(prefix) - len(suffix)) + suffix
        assert len(frame.encode()) == LIMIT
        await peer.ws.send_str(frame)
        fault = await peer.wait_for(lambda f: f["type"] == "fault")
        assert fault["code"] == "unknown_type"  # read and answered: the socket stays open
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")
        await peer.ws.send_str(frame[:-2] + 'x"}')  # one byte over
        assert await _closed_within(peer, 5) == 1009


# -- issue 15 bug 9: unmasked client frames ---------------------------------------------


async def test_unmasked_client_frame_closes_1002(env: tuple[Live, FakeGemini]) -> None:
    live, _ = env
    token, _ = await make_user_session("Unmasked")
    raw = await RawWs.connect(live, token)
    try:
        raw.send_json(type="ping")
        assert await raw.json_until(lambda f: True) == {"type": "ack", "of": "ping"}
        raw.send_frame(OP_TEXT, b'{"type": "ping"}', masked=False)
        await raw.record(5)
        assert raw.close_code() == 1002
        texts = [payload for opcode, payload in raw.frames if opcode == OP_TEXT]
        assert len(texts) == 1, texts  # the unmasked ping was not answered
    finally:
        raw.close()


async def test_unmasked_frame_sent_with_the_handshake_closes_1002(
    env: tuple[Live, FakeGemini],
) -> None:
    """Bytes that arrive in the same segment as the upgrade request are checked too."""
    live, _ = env
    token, _ = await make_user_session("Eager")
    parts = urlsplit(live.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"GET /api/ws HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    writer.write(head.encode() + bytes((0x81, 16)) + b'{"type": "ping"}')
    try:
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert response.startswith(b"HTTP/1.1 101"), response
        raw = RawWs(reader, writer)
        await raw.record(5)
        assert raw.close_code() == 1002
        assert not [p for op, p in raw.frames if op == OP_TEXT]
    finally:
        writer.close()


# -- issue 9: nothing after Close --------------------------------------------------------


async def _streaming_raw(live: Live, fake: FakeGemini, token: str) -> RawWs:
    """A raw socket receiving a long generation's tokens right now."""
    _long_answer(fake, n=600, delay=0.005)
    raw = await RawWs.connect(live, token)
    raw.send_json(type="send", message="stream to me", aiModel=MODEL)
    await raw.json_until(lambda f: f["type"] == "token")
    return raw


@pytest.mark.parametrize("trigger", ["oversize_1009", "abuse_1008", "unmasked_1002"])
async def test_no_data_frame_after_the_close_frame(
    env: tuple[Live, FakeGemini], trigger: str
) -> None:
    live, fake = env
    token, _ = await make_user_session("Closer")
    raw = await _streaming_raw(live, fake, token)
    try:
        if trigger == "oversize_1009":
            raw.send_frame(OP_TEXT, b"", declared=LIMIT + 1)  # the header alone is enough
        elif trigger == "abuse_1008":
            for _ in range(25):
                raw.send_frame(OP_TEXT, b"garbage")
        else:
            raw.send_frame(OP_TEXT, b'{"type": "ping"}', masked=False)
        await raw.record(1.5)
        assert raw.close_code() == int(trigger[-4:])
        assert raw.data_after_close() == []
    finally:
        raw.close()


async def test_no_data_frame_after_close_1001_at_shutdown(database_url: str) -> None:

    fake = FakeGemini()
    url = await fake.start()
    try:
        async with live_app(database_url, gemini_api_key="k", gemini_base_url=url) as other:
            token, _ = await make_user_session("Shutdown")
            raw = await _streaming_raw(other, fake, token)
            try:
                closing = asyncio.create_task(other.server.close())
                await raw.record(3)
                assert raw.close_code() == 1001
                assert raw.data_after_close() == []
            finally:
                raw.close()
                await closing
    finally:
        await fake.stop()


# -- the pieces under the transport ------------------------------------------------------


def _client_frame(size: int, *, masked: bool = True) -> bytes:
    head = bytes((0x81,))
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes((bit | size,))
    elif size < 65536:
        head += bytes((bit | 126,)) + struct.pack("!H", size)
    else:
        head += bytes((bit | 127,)) + struct.pack("!Q", size)
    return head + (b"\x01\x02\x03\x04" if masked else b"") + b"x" * size


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000, 1 << 20])
async def test_mask_check_follows_frames_across_any_split(piece: int) -> None:
    from server.transports.ws_socket import MaskCheck

    masked = b"".join(_client_frame(n) for n in (0, 5, 125, 126, 65535, 65536, 70000))
    stream = masked + _client_frame(3, masked=False) + _client_frame(4)
    check = MaskCheck()
    found = None
    for start in range(0, len(stream), piece):
        offset = check.scan(stream[start : start + piece])
        if offset >= 0:
            found = start + offset
            break
    assert found is not None
    # Reported where the unmasked frame's header starts, or at the start of the chunk
    # holding its second byte when its first came in an earlier one.
    assert found == len(masked) or (found % piece == 0 and found - 1 == len(masked))


async def test_aiohttp_internals_used_by_the_transport_are_there() -> None:
    """server/transports/ws_socket.py leans on these: an aiohttp upgrade that renames one
    must fail here, not silently accept unmasked frames."""
    import inspect

    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler

    assert {"_payload_parser", "_message_tail"} <= set(RequestHandler.__slots__)
    assert callable(RequestHandler.data_received)
    params = list(inspect.signature(web.WebSocketResponse._post_start).parameters)
    assert params == ["self", "request", "protocol", "writer"]
    assert "drain" in inspect.signature(web.WebSocketResponse.close).parameters


# -- issue 15 bug 1: revoked sessions lose their live connections -----------------------


async def test_sign_out_closes_sockets_and_ends_streams(env: tuple[Live, FakeGemini]) -> None:
    live, fake = env
    token, _ = await make_user_session("Leaver")
    other_token, _ = await make_user_session("Stayer")
    async with aiohttp.ClientSession() as http:
        conversation_id = await new_conversation(http, live.url, token)
        peer = await _peer(live, http, token)
        await peer.send(type="subscribe", conversationId=conversation_id)
        await peer.wait_for(lambda f: f["type"] == "subscribed")
        bystander = await _peer(live, http, other_token)
        events = await http.get(
            f"{live.url}/api/conversations/{conversation_id}/events",
            headers=bearer(token),
        )
        assert events.status == 200
        _long_answer(fake)
        chat = await post_chat(
            http,
            live.url,
            token,
            headers={"Accept": "text/event-stream"},
            message="long",
            aiModel=MODEL,
        )
        assert chat.status == 200
        chat_events = read_sse(chat)
        assert (await anext(chat_events)).event == "message"

        async with http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as r:
            assert r.status == 200
        started = time.monotonic()
        assert await _closed_within(peer, PROMPTLY) == 4001

        async def drained(resp: aiohttp.ClientResponse) -> None:
            await resp.read()

        await asyncio.wait_for(drained(events), PROMPTLY)
        rest = await asyncio.wait_for(_collect(chat_events), PROMPTLY)
        assert time.monotonic() - started < PROMPTLY
        assert not any(e.event in ("done", "error", "cancelled") for e in rest)  # cut short
        # Another user's socket is untouched.
        await bystander.send(type="ping")
        await bystander.wait_for(lambda f: f.get("of") == "ping")
        await bystander.close()
        events.close()
        chat.close()


async def _collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


async def test_revoke_session_closes_only_that_sessions_sockets(
    env: tuple[Live, FakeGemini],
) -> None:
    live, _ = env
    token, user_id = await make_user_session("Two devices")
    from server.auth.sessions import SessionStore

    second, _ = await SessionStore().start(user_id)
    async with aiohttp.ClientSession() as http:
        victim_id = await _session_id(live, http, token)
        victim = await _peer(live, http, token)
        keeper = await _peer(live, http, second)
        await victim.send(type="ping")
        await victim.wait_for(lambda f: f.get("of") == "ping")
        async with http.post(
            live.url + "/api/auth/revoke-session", json={"id": victim_id}, headers=bearer(second)
        ) as r:
            assert r.status == 200
        assert await _closed_within(victim, PROMPTLY) == 4001
        await keeper.send(type="ping")
        await keeper.wait_for(lambda f: f.get("of") == "ping")
        await keeper.close()


async def test_expired_session_closes_its_socket(env: tuple[Live, FakeGemini]) -> None:
    from server.storage.tables import Session

    live, _ = env
    token, user_id = await make_user_session("Expiring")
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    await Session.update({Session.expires_at: expires}).where(Session.user_id == user_id).run()
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")
        assert await _closed_within(peer, 1.5 + PROMPTLY) == 4001
        assert datetime.now(UTC) >= expires


async def test_revocation_by_another_process_is_seen(env: tuple[Live, FakeGemini]) -> None:
    """Another process deletes the session row: this one notices on its next re-check."""
    from server.storage.tables import Session

    live, _ = env
    token, user_id = await make_user_session("Elsewhere")
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")
        await Session.delete().where(Session.user_id == user_id).run()
        recheck = live.settings.session_recheck
        assert await _closed_within(peer, recheck + PROMPTLY) == 4001


async def test_send_on_a_revoked_session_starts_nothing(env: tuple[Live, FakeGemini]) -> None:
    from server.storage.tables import Conversation, Session

    live, _ = env
    token, user_id = await make_user_session("Too late")
    async with aiohttp.ClientSession() as http:
        peer = await _peer(live, http, token)
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f.get("of") == "ping")
        # Revoked elsewhere, and the send comes before any periodic re-check could run.
        await Session.delete().where(Session.user_id == user_id).run()
        await peer.send(type="send", message="should not run", aiModel="demo")
        assert await _closed_within(peer, PROMPTLY) == 4001
        assert not [f for f in peer.frames if f.get("of") == "send"]
        assert await Conversation.count().where(Conversation.user_id == user_id).run() == 0


async def test_no_data_frame_after_close_4001(env: tuple[Live, FakeGemini]) -> None:
    live, fake = env
    token, _ = await make_user_session("Revoked")
    raw = await _streaming_raw(live, fake, token)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(live.url + "/api/auth/sign-out", headers=bearer(token)) as r:
                assert r.status == 200
        await raw.record(1.5)
        assert raw.close_code() == 4001
        assert raw.data_after_close() == []
    finally:
        raw.close()
