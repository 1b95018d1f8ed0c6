"""What the cluster tests add to :mod:`tests.server_process`: a Redis key prefix per test
and a private ``redis-server``.

A :class:`Cluster` starts ``cero-api serve`` processes (:func:`tests.server_process.serve`,
so start, readiness, logs and the stop by pid are that module's) in cluster mode: one
PostgreSQL database (the caller's, fresh per test module) and the shared Redis under a key
prefix unique to the test, so tests never see each other's keys (deleted at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as redis
from aiohttp.test_utils import unused_port

from server.storage import db
from tests.conditions import until
from tests.conftest import IN_CI, create_pg_database, drop_pg_database
from tests.server_process import EnvChanges, ServerProcess, serve, serve_many

REDIS_URL = os.environ.get("CERO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def require_redis(url: str = REDIS_URL) -> None:
    """Skip without a reachable Redis, except under ``CI=true`` (then fail)."""
    client = redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        problem = f"Redis not reachable at {url}: {exc!r}"
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: cluster tests must run, not skip)")
        pytest.skip(problem)
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pg_url() -> AsyncIterator[str]:
    """A cluster test module's fresh, migrated PostgreSQL database (Redis must answer)."""
    await require_redis()
    url = await create_pg_database()
    await db.migrate(db.bind(url))
    try:
        yield url
    finally:
        await drop_pg_database(url)


@dataclass
class Cluster:
    """Server processes sharing one database and one Redis key prefix; :meth:`stop`
    stops them all and deletes the prefix's keys."""

    database_url: str
    workdir: Path
    env: dict[str, str]
    prefix: str = field(default_factory=lambda: f"cerotest:{secrets.token_hex(6)}:")
    redis_url: str = REDIS_URL
    servers: list[ServerProcess] = field(default_factory=list)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def _env(self, extra: dict[str, str]) -> EnvChanges:
        return {
            "CERO_REDIS_URL": self.redis_url,
            "CERO_REDIS_PREFIX": self.prefix,
            "CERO_LOG_LEVEL": "info",
            **self.env,
            **extra,
        }

    async def start(self, **extra: str) -> ServerProcess:
        """One more process, ready (``/readyz`` 200) when this returns."""
        server = await self._stack.enter_async_context(
            serve(self.database_url, cwd=self.workdir, env=self._env(extra))
        )
        self.servers.append(server)
        return server

    async def start_many(self, count: int, **extra: str) -> list[ServerProcess]:
        servers = await self._stack.enter_async_context(
            serve_many(count, self.database_url, cwd=self.workdir, env=self._env(extra))
        )
        self.servers += servers
        return servers

    async def stop(self) -> None:
        await self._stack.aclose()
        client = redis.from_url(self.redis_url, socket_connect_timeout=2)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        except redis.ConnectionError:
            pass  # a test's private Redis, stopped already
        finally:
            await client.aclose()


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free port (never the shared one), to
    kill and restart; no persistence, so a restart comes back empty."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.port = unused_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            if IN_CI:
                pytest.fail("redis-server not installed (CI=true: must not skip)")
            pytest.skip("redis-server not installed")
        client = redis.from_url(self.url, socket_connect_timeout=1)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except redis.ConnectionError:
                return False

        try:
            await until(answers, 5, every=0.05, what="the private redis-server answers PING")
        finally:
            await client.aclose()

    def pause(self) -> None:
        """SIGSTOP: Redis stops answering but keeps its data and its connections (what a
        stalled host or a long fork looks like to the clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


async def lease_owner(prefix: str, conversation_id: str) -> str | None:
    """The node id holding a conversation's lease (``None``: nobody)."""
    client = redis.from_url(REDIS_URL)
    try:
        value = await client.get(f"{prefix}c:{conversation_id}:lease")
    finally:
        await client.aclose()
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.rpartition(":")[0]
