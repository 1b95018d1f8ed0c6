"""Deploys that cut no answer (issue 13): SIGTERM to ``cero-api serve`` with 20 generations
running over WebSockets.

- ``/readyz`` answers 503 at once; a new ``send`` is refused (``fault``/``server_shutdown``),
  and so are new WebSocket and SSE connections (``503``).
- The generations that end within ``CERO_DRAIN_TIMEOUT`` end normally: ``done``, stored
  ``complete`` with every token (was: all 20 cut with ``server_shutdown`` at once).
- The ones still running at the deadline end with ``error``/``server_shutdown`` and are
  stored ``interrupted`` with exactly the text their watchers received.
- Every socket is closed with 1001 and the process exits 0.
- Cluster mode: the leases are given back, so another process takes the next command at
  once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from server.storage import db
from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.cluster_harness import Cluster, lease_owner, require_redis
from tests.conftest import create_pg_database, drop_pg_database
from tests.live_clients import post_chat
from tests.server_process import serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MODEL = "gemini-2.5-flash-lite"
GENERATIONS = 20
DRAIN = 6.0
#: Finishing answers: 40 chunks 50 ms apart, about 2 s, well inside the drain.
FINISHING = 40
#: Cluster mode: a lease that only a release (not its expiry) frees within the test.
LONG_LEASE = 30.0


class Watcher:
    """One WebSocket, one generation: every frame it receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                async with self.changed:
                    self.frames.append(orjson.loads(msg.data))
                    self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, pred: Any, within: float = 30.0) -> dict[str, Any]:
        async def first() -> dict[str, Any]:
            async with self.changed:
                while True:
                    for frame in self.frames:
                        if pred(frame):
                            return frame
                    if self.task.done():
                        raise AssertionError(f"socket closed; frames: {self.frames[-3:]}")
                    await self.changed.wait()

        return await asyncio.wait_for(first(), within)

    @property
    def text(self) -> str:
        return "".join(f["text"] for f in self.frames if f["type"] == "token")


async def test_sigterm_drains_20_generations(database_url: str, tmp_path: Path) -> None:
    await db.migrate(db.bind(database_url))
    token, _ = await make_user_session("Drain")
    release = asyncio.Event()  # never set: these answers outlive the drain
    fake = FakeGemini(default_script=Script(chunks=["Title"]))
    gemini_url = await fake.start()
    for n in range(GENERATIONS):
        if n % 2 == 0:
            fake.enqueue(Script(chunks=[f"f{n}.{i} " for i in range(FINISHING)], chunk_delay=0.05))
        else:
            chunks: list[str | dict[str, Any]] = [f"h{n}.{i} " for i in range(50)]
            fake.enqueue(Script(chunks=chunks, release_after=5, release=release))
    env = {
        "GEMINI_API_KEY": "test-key",
        "CERO_GEMINI_BASE_URL": gemini_url,
        "CERO_DRAIN_TIMEOUT": str(DRAIN),
        "CERO_MAX_GENERATIONS_PER_USER": str(GENERATIONS + 5),
        "CERO_LOG_LEVEL": "info",
    }
    try:
        async with (
            serve(database_url, cwd=tmp_path, env=env) as server,
            aiohttp.ClientSession() as http,
        ):
            watchers: list[Watcher] = []
            acks: list[dict[str, Any]] = []
            for n in range(GENERATIONS):
                w = Watcher(await http.ws_connect(server.ws_url, headers=bearer(token)))
                await w.ws.send_str(
                    orjson.dumps({"type": "send", "message": f"q{n}", "aiModel": MODEL}).decode()
                )
                acks.append(await w.wait_for(lambda f: f["type"] == "ack"))
                # In order: the fake's scripts go to the generations as they start.
                await w.wait_for(lambda f: f["type"] == "token")
                watchers.append(w)
            extra = Watcher(await http.ws_connect(server.ws_url, headers=bearer(token)))

            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # /readyz turns 503 at once (a load balancer stops sending here).
            await server.wait_ready(status=503, within=5)
            assert time.monotonic() - signalled < 5
            # A new generation is refused; the running ones go on.
            await extra.ws.send_str(
                orjson.dumps({"type": "send", "message": "late", "aiModel": MODEL}).decode()
            )
            refused = await extra.wait_for(lambda f: f["type"] == "fault")
            assert refused["code"] == "server_shutdown", refused
            # New live connections go elsewhere too: WebSocket and SSE answer 503.
            with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
                await http.ws_connect(server.ws_url, headers=bearer(token))
            assert handshake.value.status == 503
            events = f"{server.url}/api/conversations/{acks[0]['conversationId']}/events"
            async with http.get(events, headers=bearer(token)) as sse:
                assert sse.status == 503
                assert (await sse.json())["code"] == "server_shutdown"

            ends = [
                await w.wait_for(lambda f: f["type"] in ("done", "error", "cancelled"), 40)
                for w in watchers
            ]
            exit_ = await server.stop()
            for w in [*watchers, extra]:
                await asyncio.wait_for(w.task, 10)
                assert w.ws.close_code == 1001, w.ws.close_code
        assert exit_.code == 0 and not exit_.killed, (exit_, server.log_tail())
        assert exit_.seconds < DRAIN + 15, exit_

        done = [e for e in ends if e["type"] == "done"]
        cut = [e for e in ends if e["type"] == "error"]
        assert len(done) == GENERATIONS // 2, ends
        assert len(cut) == GENERATIONS // 2, ends
        assert {e["code"] for e in cut} == {"server_shutdown"}
        for w, ack, end in zip(watchers, acks, ends, strict=True):
            row = await Message.select().where(Message.id == ack["messageId"]).first().run()
            assert row is not None
            if end["type"] == "done":
                assert w.text.startswith("f"), w.text[:20]
                assert end["fullText"] == w.text and w.text.count(" ") == FINISHING
                assert (row["status"], row["content"]) == ("complete", w.text)
            else:
                assert w.text.startswith("h"), w.text[:20]
                # No text lost: what the watcher saw is what is stored.
                assert (row["status"], row["content"]) == ("interrupted", w.text)
        assert '"draining"' in server.log(), server.log_tail()
    finally:
        release.set()
        await fake.stop()


async def test_sigterm_in_cluster_mode_releases_leases(tmp_path: Path) -> None:
    """Cluster mode: the owner drains its running answer (``done``, stored ``complete``),
    gives its lease back as it exits, and the next command through another process runs
    at once, long before the lease could have expired (``CERO_LEASE_TTL`` 30 s)."""
    await require_redis()
    url = await create_pg_database()
    fake = FakeGemini(default_script=Script(chunks=["Title"]))
    gemini_url = await fake.start()
    cluster = Cluster(
        url,
        tmp_path,
        {
            "CERO_LEASE_TTL": str(LONG_LEASE),
            "CERO_DRAIN_TIMEOUT": str(DRAIN),
            "GEMINI_API_KEY": "test-key",
            "CERO_GEMINI_BASE_URL": gemini_url,
        },
    )
    try:
        await db.migrate(db.bind(url))
        token, _ = await make_user_session("DrainCluster")
        a, b = await cluster.start_many(2)
        fake.enqueue(Script(chunks=[f"c{i} " for i in range(FINISHING)], chunk_delay=0.05))
        async with aiohttp.ClientSession() as http:
            async with post_chat(http, a.url, token, message="long", aiModel=MODEL) as resp:
                assert resp.status == 200
                lines: list[dict[str, Any]] = []
                async for raw in resp.content:
                    if not raw.strip():
                        continue
                    lines.append(orjson.loads(raw))
                    if lines[-1]["topic"] == "token" and len(lines) == 3:
                        a.signal(signal.SIGTERM)
            init = next(line["data"] for line in lines if line["topic"] == "init")
            conversation_id = init["conversationId"]
            done = next(line["data"] for line in lines if line["topic"] == "done")
            text = "".join(line["data"] for line in lines if line["topic"] == "token")
            assert done["fullText"] == text and text.count(" ") == FINISHING
            exit_ = await a.stop()
            assert exit_.code == 0 and not exit_.killed, exit_
            assert await lease_owner(cluster.prefix, conversation_id) is None

            started = time.monotonic()
            async with post_chat(
                http, b.url, token, message="next", aiModel=MODEL, conversationId=conversation_id
            ) as resp:
                assert resp.status == 200, await resp.text()
                topics = [orjson.loads(raw)["topic"] async for raw in resp.content if raw.strip()]
            assert topics[-1] == "done", topics
            assert time.monotonic() - started < LONG_LEASE / 3
        row = await Message.select().where(Message.id == init["messageId"]).first().run()
        assert row is not None and (row["status"], row["content"]) == ("complete", text)
    finally:
        await cluster.stop()
        await fake.stop()
        await drop_pg_database(url)
