"""WebSocket and SSE hardening (issues 9 and 15): sockets that outlive their session, the
frame-size boundary, unmasked client frames, ``ping`` → ``ack``, and nothing written after
a Close frame.

The raw client below speaks RFC 6455 over a plain socket, so that it can send what no
library sends (unmasked frames, a header announcing an oversized frame) and record every
server frame in arrival order, including what follows a Close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, make_settings, start_live
from tests.fakes.gemini import FakeGemini
from tests.live_clients import WsPeer

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"
LIMIT = 1 << 20  # the default CERO_WS_MAX_FRAME
#: The contract's "within a second", plus scheduling slack for a loaded CI machine.
PROMPTLY = 2.0

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini]]:
    fake = FakeGemini()
    url = await fake.start()
    live = await start_live(
        lambda port: make_settings(database_url, port=port, gemini_api_key="k", gemini_base_url=url)
    )
    yield live, fake
    await live.server.close()
    await fake.stop()


async def _peer(live: Live, http: aiohttp.ClientSession, token: str) -> WsPeer:
    ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token), max_msg_size=0)
    return WsPeer(ws).start()


async def _closed_within(peer: WsPeer, seconds: float) -> int | None:
    await asyncio.wait_for(asyncio.shield(peer._task), seconds)  # type: ignore[arg-type]
    return peer.close_code


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
