"""N real server processes in cluster mode on loopback, for the cluster tests.

Each process is ``python -m server.cli serve`` on a free port, against one PostgreSQL
database (fresh per test module) and the shared Redis under a key prefix unique to the
test, so tests never see each other's keys (they are deleted afterwards). Processes are
stopped by pid: SIGTERM, or SIGKILL / SIGSTOP / SIGCONT when a test means it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CERO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def require_redis() -> None:
    """Skip without a reachable Redis, except under ``CI=true`` (then fail)."""
    client = redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        problem = f"Redis not reachable at {REDIS_URL}: {exc!r}"
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: cluster tests must run, not skip)")
        pytest.skip(problem)
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class Cluster:
    database_url: str
    workdir: Path
    env: dict[str, str]
    prefix: str = field(default_factory=lambda: f"cerotest:{secrets.token_hex(6)}:")
    servers: list[Server] = field(default_factory=list)
    redis_url: str = REDIS_URL

    def start(self, **extra: str) -> Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "BETTER_AUTH_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DATABASE_URL=self.database_url,
            CERO_REDIS_URL=self.redis_url,
            CERO_REDIS_PREFIX=self.prefix,
            CERO_PORT=str(port),
            BETTER_AUTH_SECRET="s" * 40,
            CERO_LOG_LEVEL="info",
            CERO_LOG_FORMAT="json",
            CERO_MAX_LOOP_LAG="0",
        )
        env.update(self.env)
        env.update(extra)
        log_path = self.workdir / f"server-{port}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve"],
                cwd=self.workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        server = Server(port, proc, log_path)
        self.servers.append(server)
        return server

    async def wait_up(self, server: Server, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if server.proc.poll() is not None:
                    raise AssertionError(f"server exited: {server.logs()}")
                try:
                    async with http.get(f"{server.url}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start: {server.logs()}")

    async def start_many(self, count: int, **extra: str) -> list[Server]:
        servers = [self.start(**extra) for _ in range(count)]
        for server in servers:
            await self.wait_up(server)
        return servers

    async def stop(self) -> None:
        for server in self.servers:
            if server.proc.poll() is None:
                server.signal(signal.SIGCONT)
                server.proc.terminate()
        for server in self.servers:
            try:
                await asyncio.to_thread(server.proc.wait, 20)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                await asyncio.to_thread(server.proc.wait)
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

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.from_url(self.url, socket_connect_timeout=1)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except redis.ConnectionError:
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError("private redis-server did not start")

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
