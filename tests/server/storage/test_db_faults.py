"""A database that cannot take writes (issue 15, items 3 and 4), against ``cero-api serve``.

The write lock is held from the test, the way another process (a backup, a migration, a
stuck client) would hold it: a plain ``sqlite3`` connection in ``BEGIN IMMEDIATE`` on
SQLite, ``LOCK TABLE ... IN EXCLUSIVE MODE`` (reads pass, writes wait) on PostgreSQL.

- Every write answers ``503 {"code": "not_ready"}`` within a bound set by
  ``CERO_DB_WRITE_TIMEOUT`` (was: ``500 internal`` after 30 s): a chat in an existing
  conversation, a chat that creates one, rename, delete, sign-out.
- ``/readyz`` answers 503 while the lock is held (was: 200), 200 again once it is
  released, and the server serves again without a restart.
- SIGTERM ends the process within the shutdown deadline whatever the database's state
  (was: ``stopped`` logged, then a hang in ``threading._shutdown`` on an aiosqlite thread
  of a connection that a failed ``BEGIN`` never closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.storage import db
from server.storage.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.cluster_harness import Cluster, require_redis
from tests.conditions import until
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database, write_lock
from tests.live_clients import chat_result, post_chat
from tests.server_process import ServerProcess, serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
WRITE_TIMEOUT = 1.0
#: A 503 must come within the writer's bound (2 × timeout + 1 s), plus slack for CI.
ANSWER_WITHIN = 2 * WRITE_TIMEOUT + 1 + 4.0
#: ``server.cli.SHUTDOWN_DEADLINE_S`` (15 s), plus slack for a loaded CI machine.
EXIT_WITHIN = 25.0
#: The backend-kill storm: concurrent clients, and how many kill rounds (every 0.25 s).
STORM_CLIENTS = 6
STORM_KILLS = 60
#: What the write lock holds on PostgreSQL: every table the writes under test touch.
LOCKED = ("message", "conversation", "session")


def _serve(database_url: str, cwd: Path, **env: str) -> AbstractAsyncContextManager[ServerProcess]:
    settings = {
        "CERO_DB_WRITE_TIMEOUT": str(WRITE_TIMEOUT),
        "CERO_FLUSH_INTERVAL": "0.2",
        "CERO_LOG_LEVEL": "warning",
    }
    return serve(database_url, cwd=cwd, env={**settings, **env}, stop_within=EXIT_WITHIN)


async def _chat(
    http: aiohttp.ClientSession, url: str, token: str, **body: Any
) -> tuple[int, list[dict[str, Any]], float]:
    """``POST /api/chat`` (NDJSON); ``(status, lines or [error body], seconds)``."""
    started = time.monotonic()
    status, lines = await chat_result(http, url, token, **{"message": "hello there", **body})
    return status, lines, time.monotonic() - started


def _conversation_id(lines: list[dict[str, Any]]) -> str:
    for line in lines:
        data = line.get("data")
        if isinstance(data, dict) and data.get("conversationId"):
            return str(data["conversationId"])
        if line.get("conversationId"):
            return str(line["conversationId"])
    raise AssertionError(f"no conversation id in {lines[:3]}")


async def _status(
    http: aiohttp.ClientSession, method: str, url: str, token: str, **kw: Any
) -> tuple[int, Any, float]:
    started = time.monotonic()
    async with http.request(method, url, headers=bearer(token), **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body, time.monotonic() - started


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with http.get(f"{url}/readyz") as resp:
        await resp.read()
        return resp.status, time.monotonic() - started


def _not_ready(status: int, body: Any, seconds: float, what: str) -> None:
    assert status == 503, (what, status, body)
    # Auth routes answer in Better Auth's shape ({error, error_description}).
    assert isinstance(body, dict), (what, body)
    assert "not_ready" in (body.get("code"), body.get("error")), (what, body)
    assert seconds < ANSWER_WITHIN, (what, seconds)


async def _prepare(database_url: str) -> str:
    engine = db.bind(database_url)
    await db.migrate(engine)
    token, _ = await make_user_session("Faults")
    return token


async def test_locked_database_answers_503_and_recovers(database_url: str, tmp_path: Path) -> None:
    """Item 4, both engines: writes and ``/readyz`` say 503 while the lock is held, then
    everything works again without a restart; SIGTERM still stops it cleanly."""
    token = await _prepare(database_url)
    async with _serve(database_url, tmp_path, CERO_DEMO_TOKEN_DELAY="0.001") as server:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            status, lines, _ = await _chat(http, server.url, token)
            assert status == 200, lines
            conversation = _conversation_id(lines)
            doomed = _conversation_id((await _chat(http, server.url, token))[1])

            async with write_lock(database_url, LOCKED):
                ready, seconds = await _readyz(http, server.url)
                assert ready == 503 and seconds < ANSWER_WITHIN, (ready, seconds)
                status, lines, seconds = await _chat(
                    http, server.url, token, conversationId=conversation
                )
                _not_ready(status, lines[0], seconds, "chat")
                status, lines, seconds = await _chat(http, server.url, token)
                _not_ready(status, lines[0], seconds, "chat creating a conversation")
                conv_url = f"{server.url}/api/conversations/{conversation}"
                _not_ready(
                    *await _status(http, "PATCH", conv_url, token, json={"shortTitle": "renamed"}),
                    "rename",
                )
                _not_ready(
                    *await _status(
                        http, "DELETE", f"{server.url}/api/conversations/{doomed}", token
                    ),
                    "delete",
                )
                _not_ready(
                    *await _status(http, "POST", f"{server.url}/api/auth/sign-out", token),
                    "sign-out",
                )
                ready, _ = await _readyz(http, server.url)
                assert ready == 503

            # Released: ready again, and every write works, without a restart.
            await server.wait_ready(within=15)
            status, lines, _ = await _chat(http, server.url, token, conversationId=conversation)
            assert status == 200, lines
            assert lines[-1].get("topic") in ("done", "finish") or "done" in str(lines[-1])
            conv_url = f"{server.url}/api/conversations/{conversation}"
            status, body, _ = await _status(
                http, "PATCH", conv_url, token, json={"shortTitle": "ok"}
            )
            assert status == 200, body
            status, body, _ = await _status(
                http, "DELETE", f"{server.url}/api/conversations/{doomed}", token
            )
            assert status in (200, 204), body
        stopped = await server.stop(EXIT_WITHIN)
        err = server.log()
        assert stopped.code == 0 and not stopped.killed, (stopped, err[-3000:])
        assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("release", [False, True], ids=["lock-kept", "lock-released"])
async def test_sigterm_exits_with_the_write_lock_held(tmp_path: Path, release: bool) -> None:
    """Item 3: an answer streaming, its flushes and other writes failing on a held SQLite
    write lock for longer than every busy timeout; SIGTERM, with the lock still held or
    released meanwhile: the process is gone within the shutdown deadline."""
    database_url = f"sqlite:///{tmp_path}/cero.db"
    token = await _prepare(database_url)
    async with _serve(database_url, tmp_path, CERO_DEMO_TOKEN_DELAY="0.05") as server:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            status, lines, _ = await _chat(http, server.url, token)
            assert status == 200, lines
            conversation = _conversation_id(lines)

            first_token = asyncio.Event()

            async def stream() -> None:  # an answer streaming while the lock is taken
                with contextlib.suppress(Exception):
                    async with post_chat(
                        http, server.url, token, message="hello there", conversationId=conversation
                    ) as resp:
                        async for raw in resp.content:
                            if b'"token"' in raw:
                                first_token.set()
                first_token.set()  # ended (or failed) before a token: do not wait forever

            streaming = asyncio.create_task(stream())
            await asyncio.wait_for(first_token.wait(), 30)
            assert not streaming.done(), "the answer ended before the lock was taken"
            async with write_lock(database_url, LOCKED):
                others = [
                    _status(
                        http,
                        "PATCH",
                        f"{server.url}/api/conversations/{conversation}",
                        token,
                        json={"shortTitle": "x"},
                    )
                    for _ in range(3)
                ]
                others.append(_chat(http, server.url, token))
                others.append(_readyz(http, server.url))  # type: ignore[arg-type]
                await asyncio.gather(*others, return_exceptions=True)
                # The behaviour under test: the lock outlasts every busy timeout while
                # the answer's flushes fail.
                await asyncio.sleep(3 * WRITE_TIMEOUT + 1)
                if not release:
                    stopped = await server.stop(EXIT_WITHIN)
            if release:
                stopped = await server.stop(EXIT_WITHIN)
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
        err = server.log()[-3000:]
        assert not stopped.killed, f"still running {stopped.seconds:.0f} s after SIGTERM: {err}"
        # Closed on every path: the exit is clean, not the watchdog's last resort.
        assert stopped.code == 0 and "shutdown_forced" not in err, (stopped, err)


async def test_watchdog_ends_a_process_a_thread_keeps_alive() -> None:
    """The last resort: a non-daemon thread that never ends (a leaked aiosqlite thread)
    no longer keeps the process alive past the deadline."""
    code = (
        "import threading, time\n"
        "from server.cli import _exit_watchdog\n"
        "threading.Thread(target=time.sleep, args=(60,), name='stuck').start()\n"
        "_exit_watchdog(0.5)\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 0
    assert "shutdown_forced" in result.stderr + result.stdout and "stuck" in (
        result.stderr + result.stdout
    )


@contextlib.asynccontextmanager
async def killing_backends(database_url: str, every: float = 0.25) -> AsyncIterator[list[int]]:
    """``pg_terminate_backend`` every connection to ``database_url``'s database (never this
    one's own) every ``every`` seconds until the block ends; yields the kill counts."""
    name = database_url.rpartition("/")[2]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    kills: list[int] = []

    async def loop() -> None:
        while True:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            kills.append(int(killed))
            await asyncio.sleep(every)  # the fault's period, by design

    task = asyncio.create_task(loop())
    try:
        yield kills
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await admin.close()


async def _storm_client(
    http: aiohttp.ClientSession, url: str, token: str, stop: asyncio.Event
) -> list[tuple[str, int, Any]]:
    """Chats (new conversation, then a second turn), listings and reads until ``stop``;
    every answer that is not a 2xx as ``(what, status, body)``."""
    failures: list[tuple[str, int, Any]] = []
    while not stop.is_set():
        status, lines, _ = await _chat(http, url, token)
        if status != 200:
            failures.append(("chat", status, lines[0]))
            continue
        conversation = _conversation_id(lines)
        status, lines, _ = await _chat(http, url, token, conversationId=conversation)
        if status != 200:
            failures.append(("chat in conversation", status, lines[0]))
        for what, path in (
            ("list", "/api/conversations"),
            ("messages", f"/api/conversations/{conversation}/messages"),
        ):
            status, body, _ = await _status(http, "GET", url + path, token)
            if status >= 300:
                failures.append((what, status, body))
    return failures


@contextlib.asynccontextmanager
async def _one_server(mode: str, database_url: str, cwd: Path) -> AsyncIterator[ServerProcess]:
    """``cero-api serve`` alone, or as one node of a cluster (Redis, leases, fencing)."""
    env = {"CERO_DEMO_TOKEN_DELAY": "0.01", "CERO_LOG_LEVEL": "info"}
    if mode == "single":
        async with _serve(database_url, cwd, **env) as server:
            yield server
        return
    await require_redis()
    cluster = Cluster(
        database_url,
        cwd,
        {"CERO_DB_WRITE_TIMEOUT": str(WRITE_TIMEOUT), "CERO_FLUSH_INTERVAL": "0.2", **env},
    )
    try:
        yield await cluster.start()
    finally:
        await cluster.stop()


async def _no_streaming_rows() -> bool:
    return not await Message.select(Message.id).where(Message.status == "streaming").run()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["single", "cluster"])
async def test_backends_killed_every_quarter_second(tmp_path: Path, mode: str) -> None:
    """Issue 20 item 4: the server's PostgreSQL connections terminated every 0.25 s while
    chats run. Every answer is a 2xx or ``503 not_ready``, never a 500 (was: ``500
    internal`` from asyncpg's "another operation is in progress": one connection used by
    two operations after a failure); no row is left ``streaming``."""
    database_url = await create_pg_database()
    try:
        token = await _prepare(database_url)
        async with _one_server(mode, database_url, tmp_path) as server:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                stop = asyncio.Event()
                async with killing_backends(database_url) as kills:
                    clients = [
                        asyncio.create_task(_storm_client(http, server.url, token, stop))
                        for _ in range(STORM_CLIENTS)
                    ]
                    await until(lambda: len(kills) >= STORM_KILLS, within=STORM_KILLS * 2)
                    stop.set()
                    failures = [f for c in await asyncio.gather(*clients) for f in c]
                assert sum(kills) > 0, "no backend was terminated"
                wrong = [f for f in failures if f[1] != 503 or not _is_not_ready(f[2])]
                assert not wrong, (len(failures), wrong[:5])
                # Served again without a restart, and nothing left generating.
                await server.wait_ready(within=15)
                status, lines, _ = await _chat(http, server.url, token)
                assert status == 200, lines
            await until(_no_streaming_rows, within=20, what="no message left streaming")
            log = server.log()
        assert '"event":"unhandled_error"' not in log, log[-3000:]
    finally:
        await drop_pg_database(database_url)


def _is_not_ready(body: Any) -> bool:
    return isinstance(body, dict) and "not_ready" in (body.get("code"), body.get("error"))
