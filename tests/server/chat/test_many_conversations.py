"""Many conversations answering at once (issue 14): the server slows down, it never stops.

The everyday load of a chat backend: many users, each with one long answer streaming to
their own devices. On main at 6515005, 120 answers started together on SQLite took longer
to start than they took to stream (every turn's commit busy-polled the SQLite write lock
behind the others and the flusher), so they never all ran at once, and past 30 s of that a
send failed with ``500 database is locked``. Here the Gemini stand-in runs in its own
process, as in production; the server is the real app on a real socket, with WebSocket
subscribers, on both engines.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import unused_port

from server.storage.chat_store import create_conversation
from server.storage.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import WsPeer, check_seq, post_chat, token_text
from tests.process_stats import METRICS_AUTH
from tests.server_process import ROOT, run_server, serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CONVERSATIONS = 200
PER_SOCKET = 10
TOKENS = 160
RATE = 20.0  # tokens/s: each answer streams for 8 s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def standin() -> AsyncIterator[str]:
    """The Gemini stand-in in its own process (``make fake-gemini``), streaming at ``RATE``."""
    port = unused_port()
    command = [sys.executable, "-m", "standins.gemini", "--port", str(port)]
    command += ["--tokens", str(TOKENS), "--rate", str(RATE)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # It serves only POSTs: any answer to a GET means it listens.
    async with run_server(command, port=port, env=env, ready_path="/", ready_status=None) as fake:
        yield fake.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def busy(
    live: Live, database_url: str, standin: str, tmp_path_factory: Any
) -> AsyncIterator[str]:
    """``cero-api serve`` in its own process, as in production, on this module's database
    (``live`` migrated it); the test process is only the clients."""
    env = {
        "GEMINI_API_KEY": "k",
        "CERO_GEMINI_BASE_URL": standin,
        "CERO_LOG_LEVEL": "error",
        # One user drives every answer here: lift the per-user generation limit.
        "CERO_MAX_GENERATIONS_PER_USER": str(CONVERSATIONS),
        "CERO_SENDS_PER_MINUTE": str(CONVERSATIONS),
    }
    async with serve(database_url, cwd=tmp_path_factory.mktemp("busy"), env=env) as server:
        yield server.url


async def test_many_long_answers_at_once_all_stream_together_and_end(busy: str) -> None:
    url = busy
    token, user_id = await make_user_session("Busy")
    rooms = [str((await create_conversation(user_id, "room"))["id"]) for _ in range(CONVERSATIONS)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        peers = []
        for start in range(0, CONVERSATIONS, PER_SOCKET):
            peer = WsPeer(await http.ws_connect(url + "/api/ws", headers=bearer(token)))
            peer.start()
            for room in rooms[start : start + PER_SOCKET]:
                await peer.send(type="subscribe", conversationId=room)
            peers.append(peer)
        for i, peer in enumerate(peers):
            for room in rooms[i * PER_SOCKET : (i + 1) * PER_SOCKET]:
                await peer.wait_for(
                    lambda f, room=room: f["type"] == "subscribed" and f["conversationId"] == room
                )

        async def send(room: str) -> tuple[int, str]:
            async with post_chat(
                http, url, token, message="tell me a long story", conversationId=room
            ) as r:
                if r.status == 200:
                    await r.content.readline()  # `init`: the answer runs; let the response go
                    return 200, ""
                return r.status, await r.text()

        answers = await asyncio.gather(*(send(room) for room in rooms))
        refused = [answer for answer in answers if answer[0] != 200]
        assert not refused, f"{len(refused)} refused, the first: {refused[:3]}"

        def peer_of(room: str) -> WsPeer:
            return peers[rooms.index(room) // PER_SOCKET]

        # Every answer started before the first one ended: they all stream together.
        for room in rooms:
            await peer_of(room).wait_for(
                lambda f, room=room: f.get("conversationId") == room and f["type"] == "init"
            )
        ended = [peer_of(room).of(room, "done") + peer_of(room).of(room, "error") for room in rooms]
        assert not any(ended), f"{sum(bool(e) for e in ended)} answers ended before all started"

        # ... and every one of them ends, complete, with every token delivered in order.
        for room in rooms:
            await peer_of(room).wait_for(
                lambda f, room=room: (
                    f.get("conversationId") == room and f["type"] in ("done", "error")
                ),
                timeout=120,
            )
        for room in rooms:
            events = peer_of(room).of(room)
            check_seq(events)
            done = [e for e in events if e["type"] == "done"]
            assert len(done) == 1, [e["type"] for e in events if e["type"] != "token"]
            assert token_text(events, done[0]["messageId"]) == done[0]["fullText"]
        for peer in peers:
            await peer.close()
        async with http.get(url + "/metrics", headers=METRICS_AUTH) as r:
            metrics = {
                line.split()[0]: float(line.split()[-1])
                for line in (await r.text()).splitlines()
                if line.startswith("cero_") and " " in line
            }
    # The bounded resources are visible, and the writer batched: fewer commits than writes.
    assert metrics['cero_model_streams{provider="gemini"}'] == 0
    assert metrics['cero_model_max_connections{provider="gemini"}'] >= CONVERSATIONS
    assert metrics["cero_db_write_queue"] == 0
    assert metrics["cero_db_write_batches_total"] < metrics["cero_db_write_ops_total"]
    rows: list[dict[str, Any]] = (
        await Message.select(Message.status, Message.content)
        .where(Message.conversation_id.is_in(rooms) & (Message.role == "assistant"))
        .run()
    )
    assert len(rows) == CONVERSATIONS
    assert {r["status"] for r in rows} == {"complete"}
