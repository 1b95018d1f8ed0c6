"""Running a cluster (issue 11, operations): ``scripts/cluster.sh`` (``make cluster``) starts N
``cero-api serve --port P`` processes in cluster mode on one PostgreSQL database and the
local Redis, all ready; a SIGTERM to the script stops every one of them cleanly. And
processes migrating a fresh database at once do not race (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis

from server import cli
from server.storage import db
from tests.auth_helpers import make_user_session
from tests.cluster_harness import REDIS_URL as SHARED_REDIS
from tests.cluster_harness import require_redis
from tests.conditions import until
from tests.conftest import create_pg_database, drop_pg_database
from tests.live_clients import new_conversation

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "BETTER_AUTH_"))}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _free_ports(n: int) -> int:
    """A base port with ``n`` free ports from it (checked now; good enough for a test)."""
    for base in range(20_000 + os.getpid() % 20_000, 60_000, 7):
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


async def _cluster_script(
    count: int, base: int, database_url: str, prefix: str, **extra: str
) -> asyncio.subprocess.Process:
    """``scripts/cluster.sh count`` in its own process group, on ports from ``base``, the
    shared Redis under ``prefix``; its stderr (the prefixed logs) is a pipe to read."""
    env = _env(
        DATABASE_URL=database_url,
        CERO_REDIS_URL=SHARED_REDIS,
        CERO_REDIS_PREFIX=prefix,
        BETTER_AUTH_SECRET="s" * 32,
        CLUSTER_BASE_PORT=str(base),
        CERO_API=str(Path(sys.executable).parent / "cero-api"),
        CERO_LOG_FORMAT="json",
        **extra,
    )
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "cluster.sh"),
        str(count),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    return proc


async def _listening(proc: asyncio.subprocess.Process, count: int) -> tuple[set[int], list[bytes]]:
    """The ports of the script's processes, once ``count`` have logged ``listening`` (the
    script prefixes each line with its port), and the lines read so far."""
    assert proc.stderr is not None
    listening: set[int] = set()
    lines: list[bytes] = []
    while len(listening) < count:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, b"".join(lines).decode()[-3000:]
        lines.append(line)
        if b'"event":"listening"' in line:
            listening.add(int(line[1 : line.index(b"]")]))
    return listening, lines


async def test_concurrent_migrations_do_not_race(tmp_path: Path) -> None:
    url = await create_pg_database()
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.cli",
                "migrate",
                cwd=tmp_path,
                env=_env(DATABASE_URL=url, BETTER_AUTH_SECRET="s" * 32),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        results = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err.decode() for _, err in results]
    finally:
        await drop_pg_database(url)


async def test_cluster_script_starts_n_ready_processes_and_stops_them(tmp_path: Path) -> None:
    await require_redis()
    url = await create_pg_database()
    base = _free_ports(3)
    proc = await _cluster_script(3, base, url, f"cero-test-script-{os.getpid()}:")
    try:
        listening, lines = await _listening(proc, 3)
        assert listening == {base, base + 1, base + 2}
        async with aiohttp.ClientSession() as http:
            for port in sorted(listening):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    assert resp.status == 200
                    ready = await resp.json()
                    checks = {k: ready[k] for k in ("status", "database", "redis")}
                    assert checks == {"status": "ok", "database": "ok", "redis": "ok"}
                    assert ready["admission"]["saturated"] is False
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
        text = (b"".join(lines) + rest).decode()
        assert text.count('"event":"stopped"') == 3, text[-3000:]
        assert "Traceback" not in text
        for port in sorted(listening):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await drop_pg_database(url)


def _group(pgid: int) -> dict[int, str]:
    """The live processes of process group ``pgid``: pid → command line."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_sigterm_to_the_cluster_group_leaves_nothing_when_the_log_reader_is_gone(
    tmp_path: Path,
) -> None:
    """Issue 20, item 13: ``make cluster`` stopped (SIGTERM to the script's process group)
    after a chat, with the log prefixers gone first (their pipe has no reader: every log
    write of the servers fails with EPIPE). Every process the script started must be gone
    within the forced-exit deadline, and the ports free."""
    await require_redis()
    url = await create_pg_database()
    await db.migrate(db.bind(url))
    base = _free_ports(2)
    prefix = f"cero-test-exit-{os.getpid()}:"
    proc = await _cluster_script(2, base, url, prefix, CERO_DRAIN_TIMEOUT="1")
    try:
        await _listening(proc, 2)
        token, _ = await make_user_session("Exit")
        async with aiohttp.ClientSession() as http:
            await new_conversation(http, f"http://127.0.0.1:{base}", token)
        started = _group(proc.pid)
        servers = [pid for pid, cmd in started.items() if " serve --port " in cmd]
        prefixers = [pid for pid in started if pid != proc.pid and pid not in servers]
        assert len(servers) == 2 and prefixers, started
        # The log pipes' readers go away; then Ctrl-C's equivalent for the whole group.
        for pid in prefixers:
            os.kill(pid, signal.SIGKILL)
        await until(lambda: not any(map(_alive, prefixers)), 10, what="prefixers gone")
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = cli.SHUTDOWN_DEADLINE_S + 1 + 10  # drain 1 s, then the deadline, + slack
        await until(
            lambda: not any(map(_alive, started)),
            deadline,
            every=0.2,
            what=f"every process of the cluster gone: {_group(proc.pid)}",
        )
        for port in (base, base + 1):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        await drop_pg_database(url)
        client = redis.from_url(SHARED_REDIS)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
