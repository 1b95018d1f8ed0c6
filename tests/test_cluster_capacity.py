"""Cluster mode under concurrency (issue 21, item 3): Redis access never fails because the
process is busy.

On main at 0e4e90d two processes running 200 answers in all collapsed: redis-py's default
pool (at most 100 connections, then ``MaxConnectionsError``) refused commands, the process
took that for "Redis is down" and answered ``503 not_ready``. Here the pool waits for a
free connection (``CERO_REDIS_MAX_CONNECTIONS``), and only a Redis that does not answer
marks it down.

150 answers per process on a 64-connection pool. With fewer round trips per turn and per
token (no ``SCRIPT EXISTS`` before each log pipeline, one round trip to take a
conversation) this test also passed on 16 and 32 connections, but not every time on a
shared, loaded machine (a few sends waited over 5 s for a connection), so the pool keeps
its margin here; on 16 connections the code before those changes failed 13 answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from server import db
from server.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.cluster_harness import Cluster, require_redis
from tests.conftest import create_pg_database, drop_pg_database
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.postgres]

#: Answers per process, all at once (issue 21's figure): past redis-py's default pool of
#: 100 connections.
PER_PROCESS = 150


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pg_url() -> AsyncIterator[str]:
    await require_redis()
    url = await create_pg_database()
    await db.migrate(db.bind(url))
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def _chat(
    http: aiohttp.ClientSession, server: ServerProcess, token: str, n: int
) -> tuple[int, Any]:
    body = {"message": f"answer {n}", "aiModel": "demo"}
    async with http.post(f"{server.url}/api/chat", json=body, headers=bearer(token)) as resp:
        if resp.status != 200:
            return resp.status, await resp.text()
        lines = [orjson.loads(raw) for raw in (await resp.read()).splitlines() if raw.strip()]
        return 200, lines


async def test_two_processes_run_many_answers_at_once_without_redis_refusals(
    pg_url: str, tmp_path: Path
) -> None:
    cluster = Cluster(
        pg_url,
        tmp_path,
        {
            "CERO_DEMO_TOKEN_DELAY": "0.05",
            "CERO_MAX_GENERATIONS_PER_USER": str(PER_PROCESS * 2),
            "CERO_NEW_CONVERSATIONS_PER_HOUR": str(PER_PROCESS * 4),
            # A pool smaller than the answers in flight: they wait for connections instead
            # of failing (redis-py's default pool refuses past its size at once).
            "CERO_REDIS_MAX_CONNECTIONS": "64",
            "CERO_LOG_LEVEL": "warning",
        },
    )
    try:
        servers = await cluster.start_many(2)
        token, _ = await make_user_session("Many")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            answers = await asyncio.gather(
                *(_chat(http, servers[n % 2], token, n) for n in range(PER_PROCESS * 2))
            )
        failed = [answer for answer in answers if answer[0] != 200]
        assert not failed, f"{len(failed)} failed, the first: {failed[:3]}"
        endings = [lines[-1] for _, lines in answers]
        assert {line["topic"] for line in endings} == {"done"}, [
            line for line in endings if line["topic"] != "done"
        ][:3]
        for server in servers:
            assert "redis_down" not in server.log_tail(10_000_000), server.log_tail()
    finally:
        await cluster.stop()
    rows = await Message.select(Message.status).where(Message.role == "assistant").run()
    assert len(rows) == PER_PROCESS * 2 and {row["status"] for row in rows} == {"complete"}
