"""PostgreSQL gone mid-answer (issue 13): ``cero-api serve`` reaches the database through a
TCP proxy of the test's own, which the test cuts (every connection closed, new ones
refused) and restores; the shared PostgreSQL itself is never stopped.

- The watchers keep receiving tokens while the database is unreachable; the flush fails
  and is retried (``flush_failed``), the terminal write too (``finish_retry``).
- ``/readyz`` answers 503 while it is cut.
- The terminal state cannot be committed within ``CERO_DB_COMMIT_TIMEOUT``: the generation
  ends with ``error`` for the sender and the watcher alike; nothing flushed before the cut
  is lost (the row never holds less than it did).
- Once the proxy is back, without a restart: ``/readyz`` 200, the janitor stores the answer
  ``error`` with the whole text the watchers received, and a new chat completes.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import unused_port
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from server.storage import db
from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import create_pg_database, drop_pg_database
from tests.live_clients import WsPeer, post_chat, token_text
from tests.process_stats import METRICS_AUTH
from tests.server_process import serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

MODEL = "gemini-2.5-flash-lite"
COMMIT_TIMEOUT = 2.0


class TcpProxy:
    """127.0.0.1:``port`` → ``target``; :meth:`cut` closes every connection and refuses new
    ones (the port stays closed), :meth:`restore` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = unused_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


async def _readyz(http: aiohttp.ClientSession, url: str) -> int:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            await resp.read()
            return resp.status
    return 0


async def test_postgres_cut_mid_answer(tmp_path: Path) -> None:
    direct = await create_pg_database()
    target = URL(direct)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.restore()
    via_proxy = str(target.with_host("127.0.0.1").with_port(proxy.port))
    fake = FakeGemini(default_script=Script(chunks=["Title"]))
    gemini_url = await fake.start()
    env = {
        "GEMINI_API_KEY": "test-key",
        "CERO_GEMINI_BASE_URL": gemini_url,
        "CERO_DB_COMMIT_TIMEOUT": str(COMMIT_TIMEOUT),
        "CERO_DB_WRITE_TIMEOUT": "1",
        "CERO_FLUSH_INTERVAL": "0.2",
        "CERO_LOG_LEVEL": "info",
    }
    release = asyncio.Event()
    try:
        await db.migrate(db.bind(direct))
        token, _ = await make_user_session("Outage")
        async with (
            serve(via_proxy, cwd=tmp_path, env=env) as server,
            aiohttp.ClientSession() as http,
        ):
            fake.enqueue(Script(chunks=["ready"]))
            async with post_chat(http, server.url, token, message="first", aiModel=MODEL) as resp:
                lines = [orjson.loads(raw) async for raw in resp.content if raw.strip()]
            conversation_id = lines[0]["data"]["conversationId"]
            watcher = WsPeer(await http.ws_connect(server.ws_url, headers=bearer(token))).start()
            await watcher.send(type="subscribe", conversationId=conversation_id)
            await watcher.wait_for(lambda f: f["type"] == "subscribed")

            # 20 chunks, then held until the database is cut, then 20 more.
            chunks: list[str | dict[str, Any]] = [f"p{i} " for i in range(40)]
            fake.enqueue(Script(chunks=chunks, chunk_delay=0.02, release_after=20, release=release))
            sent: list[dict[str, Any]] = []
            resp = await post_chat(
                http,
                server.url,
                token,
                message="long",
                aiModel=MODEL,
                conversationId=conversation_id,
            )
            assert resp.status == 200
            while len([x for x in sent if x["topic"] == "token"]) < 20:
                sent.append(orjson.loads(await resp.content.readline()))
            message_id = sent[0]["data"]["messageId"]
            # What the database holds before the cut (the flush runs every 0.2 s).
            await until(lambda: _stored_len(message_id, at_least=1), within=5)
            before = await _stored(message_id)

            await proxy.cut()
            release.set()
            # Watchers keep receiving: all 40 tokens, with the database unreachable.
            await watcher.wait_for(
                lambda f: f["type"] == "token" and f["text"] == "p39 ", timeout=10
            )
            assert await _readyz(http, server.url) == 503
            async for raw in resp.content:
                if raw.strip():
                    sent.append(orjson.loads(raw))
            resp.release()
            text = "".join(x["data"] for x in sent if x["topic"] == "token")
            assert text == "".join(str(c) for c in chunks)
            assert sent[-1]["topic"] == "error", sent[-1]
            # Past CERO_DB_COMMIT_TIMEOUT (README): error/internal.
            assert sent[-1]["data"]["code"] == "internal", sent[-1]
            seen = await watcher.wait_for(
                lambda f: f["type"] == "error" and f.get("messageId") == message_id
            )
            assert seen["code"] == sent[-1]["data"]["code"]
            assert token_text(watcher.of(conversation_id), message_id) == text
            after_cut = await _stored(message_id)
            assert after_cut[1].startswith(before[1]) and len(after_cut[1]) >= len(before[1])

            await proxy.restore()
            # Recovery without a restart.
            await until(lambda: _ready(http, server.url), within=20)
            await until(lambda: _stored_is(message_id, ("error", text)), within=20)
            fake.enqueue(Script(chunks=["back ", "again"]))
            async with post_chat(
                http,
                server.url,
                token,
                message="again",
                aiModel=MODEL,
                conversationId=conversation_id,
            ) as again:
                assert again.status == 200
                tail = [orjson.loads(raw) async for raw in again.content if raw.strip()]
            assert tail[-1]["topic"] == "done" and tail[-1]["data"]["fullText"] == "back again"
            async with http.get(server.url + "/metrics", headers=METRICS_AUTH) as r:
                metrics = await r.text()
            # What an operator sees of it (docs/metrics.md).
            for failed in (
                "cero_flush_failures_total",
                "cero_db_finish_retries_total",
                "cero_db_write_failures_total",
                'cero_generations_total{code="internal",outcome="error"}',
            ):
                assert _sample(metrics, failed) >= 1, failed
            await watcher.close()
            log = server.log()
        # The flush failed and was retried, the terminal write retried until its deadline,
        # and the janitor stored it once the database was back.
        for event in ("flush_failed", "finish_retry", "finish_failed", "janitor_stored"):
            assert f'"event":"{event}"' in log, event
    finally:
        release.set()
        await proxy.cut()
        await fake.stop()
        await drop_pg_database(direct)


def _sample(text: str, sample: str) -> float:
    """A sample's value in ``/metrics`` (labels sorted by name, as written here)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            if (f"{s.name}{{{labels}}}" if labels else s.name) == sample:
                return float(s.value)
    return 0.0


async def _stored(message_id: str) -> tuple[str, str]:
    row = await Message.select().where(Message.id == message_id).first().run()
    assert row is not None
    return str(row["status"]), str(row["content"])


async def _stored_len(message_id: str, at_least: int) -> bool:
    return len((await _stored(message_id))[1]) >= at_least


async def _stored_is(message_id: str, want: tuple[str, str]) -> bool:
    return await _stored(message_id) == want


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    return await _readyz(http, url) == 200
