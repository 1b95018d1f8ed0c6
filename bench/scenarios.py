"""The scenarios: each starts what it needs, measures one window per phase, and cleans up.

Targets (issue 6) are checked in :mod:`bench.report`; this module only measures.

Why one module of ~1,350 lines: the scenarios share their process plumbing (start, wait
for ready, scrape, stop) and measurement windows; each scenario is one function of its
own below, and splitting them into files would only move the shared helpers into a fourth
module every file imports. A candidate for splitting when a scenario is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import psutil

from actors.generation_timing import PHASES
from bench.clients import client_process, open_non_reader
from bench.common import (
    HOST,
    Children,
    cpu_seconds,
    free_port,
    prompt,
    rss_bytes,
    sys_seconds,
    wait_http,
)
from standins.gemini import parse_ts

SECRET = "bench-secret-" + "x" * 40
#: The servers' CERO_METRICS_TOKEN: ``/metrics`` answers no anonymous scrape.
METRICS_TOKEN = "bench-metrics-" + "m" * 24
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
#: Tokens asked for in an as-fast-as-possible phase; the phase cancels the generation.
FAST_TOKENS = 10_000_000


@dataclass
class Config:
    duration: float = 8.0
    warmup: float = 1.5
    s1_subs: list[int] = field(default_factory=lambda: [100, 1000])
    rates: list[float] = field(default_factory=lambda: [50.0, 0.0])
    loops: list[str] = field(default_factory=lambda: ["uvloop", "asyncio"])
    s2_convs: list[int] = field(default_factory=lambda: [100, 200, 500])
    s2_subs: int = 2
    s2_rate: float = 20.0
    s2_engines: list[str] = field(default_factory=lambda: ["sqlite", "postgresql"])
    #: Seconds past an answer's planned end to wait for every ``done`` (scenario 2).
    s2_end_wait: float = 60.0
    #: Server processes per scenario-2 configuration (N > 1: cluster mode on Redis).
    s2_procs: list[int] = field(default_factory=lambda: [1])
    #: Process counts of the capacity row (empty: none), and its search's bounds.
    capacity_procs: list[int] = field(default_factory=list)
    capacity_start: int = 100
    capacity_max: int = 1600
    capacity_steps: int = 6
    capacity_budget: float = 300.0
    #: Conversations (x 1 subscriber) of the "server CPU per streamed token" row; 0 = skip.
    cost_convs: int = 200
    #: py-spy on the project server during scenario 2's largest conversation count.
    s2_profile: bool = False
    #: py-spy on the project server during every as-fast row of scenarios 1 and 5.
    fanout_profile: bool = False
    s3_conns: int = 10_000
    s3_procs: int = 4
    s4_turns: int = 200
    s5_subs: list[int] = field(default_factory=lambda: [100, 1000])
    client_procs: int = 2
    postgres_admin: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    profile: bool = True
    scenarios: list[str] = field(default_factory=lambda: ["1", "2", "3", "4", "5"])


@dataclass
class Server:
    name: str  # "project" | "baseline"
    proc: subprocess.Popen[bytes]
    port: int
    loop: str
    database: str = ""
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


# -- processes --------------------------------------------------------------------------


class Env:
    """Everything one benchmark invocation started: stand-in, servers, client processes."""

    def __init__(self, tmp: Path, cfg: Config) -> None:
        self.tmp = tmp
        self.cfg = cfg
        self.children = Children()
        self.groups: list[ClientGroup] = []
        self.standin_port = free_port()
        self.standin_url = f"http://{HOST}:{self.standin_port}"
        self.standin: subprocess.Popen[bytes] | None = None
        self.sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
        self.users: dict[str, list[tuple[str, str]]] = {}
        self.pg_databases: list[str] = []
        self.http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        self.standin = self.children.start(
            ["-m", "bench.standin", "--port", str(self.standin_port)], log=self.tmp / "standin.log"
        )
        await asyncio.to_thread(wait_http, self.standin_url + "/healthz", 30, self.standin)

    async def close(self) -> None:
        for group in list(self.groups):
            await group.stop()
        if self.http is not None:
            await self.http.close()
        self.children.stop_all()
        for name in self.pg_databases:
            with contextlib.suppress(Exception):
                await _pg_admin(
                    self.cfg.postgres_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                )

    async def seed(self, database_url: str, count: int) -> list[tuple[str, str]]:
        if database_url not in self.users:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.seed",
                database_url,
                str(count),
                cwd=str(Path(__file__).resolve().parent.parent),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            if proc.returncode != 0:
                raise RuntimeError(f"seeding {database_url.split('://')[0]} failed")
            lines = [ln for ln in out.decode().splitlines() if ln.startswith("[")]
            self.users[database_url] = [(str(u[0]), str(u[1])) for u in orjson.loads(lines[-1])]
        return self.users[database_url]

    async def new_postgres(self) -> str:
        name = "cero_bench_" + secrets.token_hex(4)
        await _pg_admin(self.cfg.postgres_admin, f'CREATE DATABASE "{name}"')
        self.pg_databases.append(name)
        return self.cfg.postgres_admin.rsplit("/", 1)[0] + "/" + name

    async def start_project(
        self, database_url: str, loop: str = "uvloop", extra_env: dict[str, str] | None = None
    ) -> Server:
        port = free_port()
        log = self.tmp / f"server-{port}.log"
        env = {
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": SECRET,
            "CERO_METRICS_TOKEN": METRICS_TOKEN,
            "GEMINI_API_KEY": "x",
            "CERO_GEMINI_BASE_URL": self.standin_url,
            "CERO_PORT": str(port),
            "CERO_HOST": HOST,
            "CERO_LOG_LEVEL": "warning",
            "CERO_LOG_FORMAT": "json",
            # Thousands of clients from one loopback address: lift the connection caps
            # (defaults 4,096 in all and 256 per address) so they measure, not refuse.
            "CERO_MAX_CONNECTIONS": "1000000",
            "CERO_MAX_CONNECTIONS_PER_IP": "1000000",
            # A few seeded users own every room and stream: lift the per-user limits too.
            "CERO_MAX_GENERATIONS_PER_USER": "1000000",
            "CERO_NEW_CONVERSATIONS_PER_HOUR": "1000000",
            "CERO_WS_MAX_SUBSCRIPTIONS": "1000000",
            "CERO_SENDS_PER_MINUTE": "1000000",
            "CERO_MAX_STREAMS_PER_USER": "1000000",
            "CERO_MAX_STREAMS_PER_IP": "1000000",
            "CERO_WS_FRAMES_PER_SECOND": "100000",
            "CERO_WS_FRAME_BURST": "1000000",
            "CERO_SIGN_IN_LIMIT": "1000000",
            "BENCH_LOOP": loop,
            **(extra_env or {}),
        }
        proc = self.children.start(["-m", "bench.launch_server"], env=env, log=log)
        server = Server("project", proc, port, loop, database_url.split("://")[0], log)
        try:
            await asyncio.to_thread(wait_http, server.url + "/healthz", 60, proc)
        except Exception:
            raise RuntimeError(f"the server did not start: {_tail(log)}") from None
        return server

    async def start_baseline(self, kind: str) -> Server:
        port = free_port()
        log = self.tmp / f"baseline-{kind}-{port}.log"
        proc = self.children.start(
            ["-m", f"bench.baseline_{kind}", "--port", str(port), "--upstream", self.standin_url],
            log=log,
        )
        server = Server("baseline", proc, port, "uvloop", "", log)
        await asyncio.to_thread(wait_http, server.url + "/healthz", 30, proc)
        return server

    def stop(self, server: Server) -> None:
        # Short grace: after an as-fast phase a server may not get to its shutdown in time.
        self.children.stop(server.proc, timeout=1.5)


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _recv(conn: Connection, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not conn.poll():
        if loop.time() > deadline:
            raise TimeoutError("a client process did not answer in time")
        await asyncio.sleep(0.02)
    return conn.recv()


class ClientGroup:
    """Client processes (spawned) sharing a list of connections round-robin."""

    def __init__(
        self,
        env: Env,
        kind: str,
        host: str,
        port: int,
        conns: Sequence[dict[str, Any]],
        procs: int,
        concurrency: int = 32,
        ready_timeout: float = 180.0,
    ) -> None:
        procs = max(1, min(procs, len(conns) or 1))
        self.env = env
        self.specs = [
            {
                "kind": kind,
                "host": host,
                "port": port,
                "conns": list(conns[i::procs]),
                "concurrency": concurrency,
                "ready_timeout": ready_timeout,
            }
            for i in range(procs)
        ]
        self.processes: list[Any] = []
        self.pipes: list[Connection] = []
        self.ready: list[dict[str, Any]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def start(self, timeout: float = 240.0) -> int:
        ctx = mp.get_context("spawn")
        for spec in self.specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.processes.append(proc)
            self.pipes.append(parent)
        self.env.groups.append(self)
        answers = await asyncio.gather(*(_recv(p, timeout) for p in self.pipes))
        self.ready = [a[1] for a in answers]
        return sum(int(r["ready"]) for r in self.ready)

    async def measure(self, t0: float, t1: float) -> tuple[dict[str, Any], np.ndarray]:
        for pipe in self.pipes:
            pipe.send(("go", t0, t1))
        answers = await asyncio.gather(
            *(_recv(p, max(0.0, t1 - time.time()) + 60) for p in self.pipes)
        )
        total: dict[str, Any] = {}
        samples = []
        for _, summary, raw in answers:
            for key, value in summary.items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
                elif isinstance(value, dict):
                    merged = total.setdefault(key, {})
                    for k, v in value.items():
                        merged[str(k)] = merged.get(str(k), 0) + v
            samples.append(np.frombuffer(raw, dtype=np.float64))
        return total, (np.concatenate(samples) if samples else np.zeros(0))

    async def count(self) -> dict[str, Any]:
        """Terminal events (``done`` / ``error`` / ``cancelled``) the clients saw since ``go``."""
        for pipe in self.pipes:
            pipe.send(("count",))
        answers = await asyncio.gather(*(_recv(p, 30) for p in self.pipes))
        ended: dict[str, int] = {}
        early = 0
        for _, summary in answers:
            for k, v in summary["ended"].items():
                ended[k] = ended.get(k, 0) + v
            early += summary["ended_early"]
        return {"ended": ended, "ended_early": early}

    async def stop(self) -> None:
        if self not in self.env.groups:
            return
        self.env.groups.remove(self)
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("stop",))
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                await _recv(pipe, 10)
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


# -- targets: how to subscribe, start and stop a stream on the project or a baseline ----


class Target:
    def __init__(self, env: Env, server: Server) -> None:
        self.env = env
        self.server = server

    @property
    def servers(self) -> list[Server]:
        """Every server process behind this target (one; :class:`Spread` has several)."""
        return [self.server]

    def sub_target(self, room_index: int, sub_index: int) -> Target:
        """Where subscriber ``sub_index`` of room ``room_index`` connects."""
        return self

    async def counter_total(self, name: str) -> int | None:
        """A ``/metrics`` counter summed over :attr:`servers` (None: not exposed)."""
        values = [await Target(self.env, s)._metric(name) for s in self.servers]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.env.http is not None
        return self.env.http

    def ws_conn(self, room: str, token: str | None) -> dict[str, Any]:
        if self.server.name == "baseline":
            return {"path": "/ws", "subscribe": [room]}
        return {"path": f"/api/ws?token={token}", "subscribe": [room]}

    def sse_conn(self, room: str, token: str | None) -> dict[str, Any]:
        if self.server.name == "baseline":
            return {"path": f"/events?room={room}"}
        return {"path": f"/api/conversations/{room}/events", "token": token}

    async def create_rooms(self, count: int, users: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``(room, owner token)``: real conversations on the project (one short turn each)."""
        if self.server.name == "baseline":
            return [(f"room{i}", "") for i in range(count)]
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> tuple[str, str]:
            token = users[i % len(users)][0]
            async with (
                gate,
                self.http.post(
                    self.server.url + "/api/chat",
                    json={"message": prompt(1, 0)},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp,
            ):
                if resp.status != 200:
                    raise RuntimeError(f"create conversation: {resp.status} {await resp.text()}")
                await resp.read()
                return resp.headers["X-Conversation-Id"], token

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def start_stream(self, room: str, token: str, tokens: int, rate: float) -> None:
        if self.server.name == "baseline":
            async with self.http.post(
                self.server.url + "/start", json={"room": room, "tokens": tokens, "rate": rate}
            ) as resp:
                await resp.read()
            return
        async with self.http.post(
            self.server.url + "/api/chat",
            json={"message": prompt(tokens, rate), "conversationId": room},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"start stream: {resp.status} {await resp.text()}")
            await resp.content.readline()  # `init`: the generation runs; let the response go

    async def stop_streams(self, rooms: Sequence[tuple[str, str]]) -> None:
        if self.server.name == "baseline":
            async with self.http.post(self.server.url + "/stop") as resp:
                await resp.read()
            return
        gate = asyncio.Semaphore(16)

        async def one(room: str, token: str) -> None:
            async with (
                gate,
                self.http.post(
                    self.server.url + f"/api/conversations/{room}/cancel",
                    json={},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp,
            ):
                await resp.read()

        await asyncio.gather(*(one(r, t) for r, t in rooms))

    async def answer_statuses(self, rooms: Sequence[tuple[str, str]]) -> dict[str, int]:
        """Status of each room's last assistant message, as stored (``GET .../messages``).

        Bounded: 10 s per request and 60 s in all; past that a room is ``unchecked``."""
        gate = asyncio.Semaphore(16)
        deadline = time.monotonic() + 60.0

        async def one(room: str, token: str) -> str:
            try:
                async with gate:
                    if time.monotonic() > deadline:
                        return "unchecked"
                    async with self.http.get(
                        self.server.url + f"/api/conversations/{room}/messages",
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        if resp.status != 200:
                            return f"http_{resp.status}"
                        body = await resp.json(loads=orjson.loads)
            except (aiohttp.ClientError, TimeoutError):
                return "unreachable"
            answers = [m for m in body.get("messages", ()) if m.get("role") == "assistant"]
            return str(answers[-1].get("status")) if answers else "none"

        statuses: dict[str, int] = {}
        for status in await asyncio.gather(*(one(r, t) for r, t in rooms)):
            statuses[status] = statuses.get(status, 0) + 1
        return statuses

    async def _metric(self, name: str) -> int | None:
        if self.server.name == "baseline":
            return None
        async with self.http.get(self.server.url + "/metrics", headers=METRICS_AUTH) as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[-1]))
        return None

    async def slow_closes(self) -> int | None:
        return await self._metric("cero_ws_slow_consumer_closes_total")

    async def tokens_published(self) -> int | None:
        """Token events the server's generations published so far (``/metrics``)."""
        try:
            return await asyncio.wait_for(self._metric("cero_tokens_streamed_total"), 5.0)
        except (aiohttp.ClientError, TimeoutError):
            return None


class Spread(Target):
    """Several project processes in cluster mode as one target (scenario 2 ``--procs N``).

    Room ``i`` is created and started through process ``i % N``; its subscriber ``j``
    connects to process ``(i + j) % N``, so with two subscribers per room on two processes
    one of them reads the answer through the other process's relay. Cancels and stored
    statuses go through the room's own process; counters are summed over all."""

    def __init__(self, env: Env, servers: list[Server]) -> None:
        super().__init__(env, servers[0])
        self.parts = [Target(env, s) for s in servers]
        self.home: dict[str, int] = {}

    @property
    def servers(self) -> list[Server]:
        return [p.server for p in self.parts]

    def sub_target(self, room_index: int, sub_index: int) -> Target:
        return self.parts[(room_index + sub_index) % len(self.parts)]

    def _part(self, room: str) -> Target:
        return self.parts[self.home.get(room, 0)]

    async def create_rooms(self, count: int, users: list[tuple[str, str]]) -> list[tuple[str, str]]:
        n = len(self.parts)
        made = await asyncio.gather(
            *(
                self.parts[k].create_rooms(len(range(k, count, n)), users[k:] + users[:k])
                for k in range(n)
            )
        )
        rooms: list[tuple[str, str]] = []
        for i in range(count):
            rooms.append(made[i % n][i // n])
        self.adopt(rooms)
        return rooms

    def adopt(self, rooms: Sequence[tuple[str, str]]) -> None:
        """Room ``i`` belongs to process ``i % N`` (rooms made elsewhere, e.g. reused)."""
        self.home = {room: i % len(self.parts) for i, (room, _) in enumerate(rooms)}

    async def start_stream(self, room: str, token: str, tokens: int, rate: float) -> None:
        await self._part(room).start_stream(room, token, tokens, rate)

    async def stop_streams(self, rooms: Sequence[tuple[str, str]]) -> None:
        await asyncio.gather(
            *(
                self.parts[k].stop_streams([r for r in rooms if self.home.get(r[0], 0) == k])
                for k in range(len(self.parts))
            )
        )

    async def answer_statuses(self, rooms: Sequence[tuple[str, str]]) -> dict[str, int]:
        total: dict[str, int] = {}
        for k in range(len(self.parts)):
            mine = [r for r in rooms if self.home.get(r[0], 0) == k]
            if not mine:
                continue
            for status, n in (await self.parts[k].answer_statuses(mine)).items():
                total[status] = total.get(status, 0) + n
        return total

    async def slow_closes(self) -> int | None:
        return await self.counter_total("cero_ws_slow_consumer_closes_total")

    async def tokens_published(self) -> int | None:
        try:
            return await asyncio.wait_for(self.counter_total("cero_tokens_streamed_total"), 5.0)
        except (aiohttp.ClientError, TimeoutError):
            return None


# -- measurements ------------------------------------------------------------------------


def percentiles(samples: np.ndarray) -> dict[str, float | None]:
    if samples.size == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ms = samples * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
    }


class CpuMeter:
    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.start = {k: sum(cpu_seconds(p) for p in v) for k, v in groups.items()}
        self.start_sys = {k: sum(sys_seconds(p) for p in v) for k, v in groups.items()}
        self.machine = psutil.cpu_times()
        self.t = time.monotonic()

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t
        out: dict[str, float] = {}
        for k, v in self.groups.items():
            used = sum(cpu_seconds(p) for p in v) - self.start[k]
            out[f"{k}_cpu_pct"] = round(100 * used / max(elapsed, 1e-9), 1)
            out[f"{k}_cpu_s"] = round(used, 4)
            out[f"{k}_sys_s"] = round(sum(sys_seconds(p) for p in v) - self.start_sys[k], 4)
        # The whole machine (every process, ours or not), % of all cores: on a shared
        # 2-core box this says whether the window was CPU-bound.
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (
            self.machine.idle + getattr(self.machine, "iowait", 0.0)
        )
        total = sum(now) - sum(self.machine)
        out["machine_cpu_pct"] = round(100 * (1 - idle / total), 1) if total > 0 else 0.0
        return out


async def _start_all(
    target: Target,
    rooms: Sequence[tuple[str, str]],
    tokens: int,
    rate: float,
    retries_503: int = 0,
) -> tuple[dict[str, Any], set[str]]:
    """Start every room's stream at once (gathered); how long that took, in all and each,
    and the rooms whose start failed. A start refused with 503 (``overloaded``: the
    server's event loop lagged, e.g. while a thousand subscribers connected on a busy
    machine) is retried after a second up to ``retries_503`` times (the fan-out scenarios
    measure delivery, not admission; scenario 2 counts the refusals instead)."""
    limit = 30.0 + 0.1 * len(rooms)
    errors: dict[str, int] = {}
    failed: set[str] = set()
    retried = 0

    async def one(room: str, token: str) -> float | None:
        nonlocal retried
        t = time.monotonic()
        try:
            for attempt in range(retries_503 + 1):
                try:
                    await asyncio.wait_for(target.start_stream(room, token, tokens, rate), limit)
                    break
                except RuntimeError as exc:
                    if attempt == retries_503 or not str(exc).startswith("start stream: 503"):
                        raise
                    retried += 1
                    await asyncio.sleep(1.0)
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            # "start stream: 503 {...,"code":"overloaded"}" -> "503 overloaded" (the code
            # tells admission control's refusal from the writer's not_ready); else the
            # exception's type
            words = str(exc).split(maxsplit=3)
            why = words[2] if isinstance(exc, RuntimeError) and len(words) > 2 else ""
            if why and len(words) > 3:
                with contextlib.suppress(ValueError, AttributeError):
                    why += " " + str(orjson.loads(words[3]).get("code", ""))
            why = why.strip() or type(exc).__name__
            errors[why] = errors.get(why, 0) + 1
            failed.add(room)
            return None
        return time.monotonic() - t

    t_all = time.monotonic()
    took = await asyncio.gather(*(one(r, t) for r, t in rooms))
    total = time.monotonic() - t_all
    ok = np.array([x for x in took if x is not None]) * 1000
    return {
        "starts_s": round(total, 3),
        "starts_p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
        "starts_max_ms": round(float(ok.max()), 1) if ok.size else None,
        "starts_failed": len(failed),
        "starts_errors": errors,  # why a start failed: HTTP status or exception type
        "starts_retried": retried,
    }, failed


async def _await_ends(
    group: ClientGroup,
    target: Target,
    rooms: Sequence[tuple[str, str]],
    failed: set[str],
    subs_per_room: int,
    deadline_wall: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Wait (until ``deadline_wall``) for every subscriber of a started answer to see it
    end, then read each answer's stored status (``GET .../messages``)."""
    started = [(r, t) for r, t in rooms if r not in failed]
    expected = len(started) * subs_per_room
    t = time.monotonic()
    seen: dict[str, Any] = {"ended": {}, "ended_early": 0}
    while True:
        seen = await group.count()
        if sum(seen["ended"].values()) >= expected or time.time() > deadline_wall:
            break
        await asyncio.sleep(0.5)
    waited = time.monotonic() - t
    statuses = await target.answer_statuses(started)
    complete = statuses.get("complete", 0)
    out: dict[str, Any] = {
        "end_wait_s": round(waited, 1),
        "ends_seen": seen["ended"],  # terminal events over the subscribers of started answers
        "ends_seen_done": seen["ended"].get("done", 0),
        "ends_expected": expected,
        "ended_before_window_end": seen["ended_early"],
        "answers": statuses,  # stored status of each started answer
        "answers_started": len(started),
        "answers_complete": complete,
        "answers_not_complete": len(started) - complete,
    }
    if failed:
        # A start answered with an error must leave nothing behind: the room's last answer
        # should still be the one it had (complete), not a row stuck in `streaming`.
        out["failed_start_rooms"] = await target.answer_statuses(
            [(r, t) for r, t in rooms if r in failed]
        )
    log(
        f"    answers: {complete}/{len(started)} started answers stored complete, "
        f"{out['ends_seen_done']}/{expected} done events seen, {waited:.1f}s after the "
        f"window ({statuses}"
        + (f"; rooms whose start failed: {out['failed_start_rooms']}" if failed else "")
        + ")"
    )
    return out


async def _sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


async def fanout(
    env: Env,
    target: Target,
    *,
    scenario: str,
    transport: str,
    rooms: list[tuple[str, str]],
    subs_per_room: int,
    rates: Sequence[float],
    non_reader: bool,
    procs: int,
    warmup: float,
    profile: Path | None = None,
    finish: bool = False,
    spy: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Subscribe ``subs_per_room`` clients to every room, then one measured phase per rate
    (rates run in order; an as-fast phase should come last: it may leave the server busy).
    With ``profile`` set, one as-fast phase under py-spy instead, not reported as a run.

    Every row times the start of all streams (each ``start_stream``, all of them gathered).
    With ``finish`` (scenario 2 on the project) the answers are not cancelled after the
    window: they run to their planned end and the row says how many ended ``done`` as the
    clients saw it and how many are stored ``complete`` (``GET .../messages``). With ``spy``
    set, py-spy records the server during the measured window of each phase into it (a
    ``{rate}`` in its name becomes the phase's rate: one file per phase; the row is still
    reported, marked ``profile``)."""
    cfg = env.cfg
    server = target.server
    multi = len(target.servers) > 1
    conns = []
    for i, (room, token) in enumerate(rooms):
        for j in range(subs_per_room):
            at = target.sub_target(i, j)
            conn = (at.ws_conn if transport == "ws" else at.sse_conn)(room, token)
            if multi:
                conn["port"] = at.server.port
            conns.append(conn)
    # 1,000 subscribers and more take a while to connect and subscribe on 2 cores.
    ready_timeout = 120.0 + 0.2 * len(conns)
    group = ClientGroup(
        env, transport, HOST, server.port, conns, procs, ready_timeout=ready_timeout
    )
    t_setup = time.monotonic()
    ready = await group.start(timeout=ready_timeout + 60)
    sockets: list[socket.socket] = []
    if non_reader:
        room, token = rooms[0]
        path = (
            target.ws_conn(room, token)["path"]
            if transport == "ws"
            else target.sse_conn(room, token)["path"]
        )
        sockets.append(
            await asyncio.to_thread(
                open_non_reader, HOST, server.port, transport, path, room, token or None
            )
        )
    await asyncio.sleep(0.3 + len(conns) / 1000)  # let presence traffic settle
    log(f"    {len(conns)} subscribers ready={ready} in {time.monotonic() - t_setup:.1f}s")
    results: list[dict[str, Any]] = []
    standin_pid = env.standin.pid if env.standin is not None else 0
    phases: list[tuple[float, bool]] = [(r, False) for r in rates]
    if profile is not None:
        phases = [(0.0, True)]
    try:
        for rate, profiled in phases:
            # Answers outlast warmup + window: the last one starts just before the warmup.
            # Those that must end `complete` (finish) are asked to be long (10 minutes),
            # and the stand-in ends them all right after the window (``/bench/finish``),
            # however long starting them took.
            # The others are cancelled after the window; their slack covers starts that
            # take long on a busy machine (15 s for 200 measured), else the first answers
            # end before the window does.
            slack = 600.0 if finish else 30.0 + 0.1 * len(rooms)
            tokens = FAST_TOKENS if rate <= 0 else int(rate * (warmup + cfg.duration + slack)) + 10
            before_start = await _standin_stats(env)
            admission0 = await _admission(target)
            starts, failed_rooms = await _start_all(
                target, rooms, tokens, rate, retries_503=5 if scenario in ("1", "5") else 0
            )
            t0 = time.time() + warmup
            t1 = t0 + cfg.duration
            measuring = asyncio.ensure_future(group.measure(t0, t1))
            await _sleep_until(t0)
            # Server CPU = the server processes' own (psutil, summed over --procs N): the
            # client processes and the stand-in are metered apart, never counted in. The
            # meter starts at t0, before the scrapes below: a lagging server can take
            # seconds to answer them, which would shrink the metered window.
            meter = CpuMeter(
                {
                    "server": [s.pid for s in target.servers],
                    "client": group.pids,
                    "standin": [standin_pid],
                }
            )
            upstream0 = await _standin_stats(env)
            published0 = await target.tokens_published()
            spy_out = profile if profiled else spy
            if spy_out is not None and "{rate}" in spy_out.name:
                spy_out = spy_out.with_name(
                    spy_out.name.replace("{rate}", "fast" if rate <= 0 else f"{rate:g}")
                )
            spying: subprocess.Popen[bytes] | None = None
            if spy_out is not None:
                spying = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "-p",
                        str(server.pid),
                        "-d",
                        str(max(1, int(cfg.duration))),
                        "-r",
                        "200",
                        "--nonblocking",
                        "-f",
                        "raw",
                        "-o",
                        str(spy_out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            await _sleep_until(t1)
            cpu = meter.read()
            loadavg = ""
            with contextlib.suppress(OSError):
                loadavg = Path("/proc/loadavg").read_text().strip()
            upstream1 = await _standin_stats(env)
            upstream = _stats_delta(upstream0, upstream1)
            # The phase's own requests are made before the window: count them from its start.
            for key in ("requests", "request_bytes"):
                if key in upstream1:
                    upstream[key] = upstream1[key] - before_start.get(key, 0)
            published1 = await target.tokens_published()
            totals, samples = await measuring
            if spying is not None:
                try:
                    spying.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    spying.kill()
                    spying.wait(5)
            admission = _admission_delta(admission0, await _admission(target))
            ends: dict[str, Any] = {}
            if finish and rate > 0:
                async with target.http.post(env.standin_url + "/bench/finish") as resp:
                    await resp.read()
                ends = await _await_ends(
                    group,
                    target,
                    rooms,
                    failed_rooms,
                    subs_per_room,
                    time.time() + cfg.s2_end_wait,
                    log,
                )
            cancel_s: float | None = None
            if ends and ends["answers_not_complete"]:
                # Answers that never ended (seen twice under machine load ≥ 3.8, never
                # reproduced on demand): what the server and the stand-in say now, before
                # the cancel, so the next occurrence can be told apart (a writer queue that
                # does not drain, model streams still open, or a stand-in that never sent
                # the last chunk).
                ends["stall_snapshot"] = await _stall_snapshot(target, env.standin_url)
            if not ends or ends["answers_not_complete"]:
                t_cancel = time.monotonic()
                try:
                    await asyncio.wait_for(target.stop_streams(rooms), 5.0 + 0.02 * len(rooms))
                    cancel_s = round(time.monotonic() - t_cancel, 2)
                except TimeoutError:
                    pass  # the server did not answer the cancel within 5 s
            window = t1 - t0
            delivered = totals.get("tokens", 0)
            row: dict[str, Any] = {
                "scenario": scenario,
                "target": server.name,
                "transport": transport,
                "loop": server.loop,
                "database": server.database,
                "conversations": len(rooms),
                "subscribers": len(conns),
                "procs": len(target.servers),
                "non_reader": non_reader,
                "rate": "fast" if rate <= 0 else rate,
                "window_s": round(window, 2),
                "loadavg": loadavg,  # the machine's, at the window's end (shared box)
                "deliveries_per_s": round(delivered / window, 1),
                "frames_per_s": round(totals.get("frames", 0) / window, 1),
                "samples": int(samples.size),
                **percentiles(samples),
                **cpu,
                "client_procs": len(group.pids),
                "ready": ready,
                "failed": totals.get("failed", 0),
                "closed_by_server": totals.get("closed", 0),
                "close_codes": totals.get("close_codes", {}),
                "cancel_s": cancel_s,
                **starts,
                **admission,
                **ends,
            }
            if rate > 0:
                # What the stand-in emitted x subscribers: what should have been delivered.
                sent = len(rooms) * rate * subs_per_room
                row["sent_per_s"] = round(sent, 1)
                row["delivered_ratio"] = round(delivered / window / sent, 4) if sent else None
            cpu_s = cpu.get("server_cpu_s")
            if cpu_s and delivered:
                row["server_us_per_token"] = round(1e6 * cpu_s / delivered, 1)
            if cpu_s:
                # The figure robust to a shared machine: what one second of the server's
                # own CPU delivers (server CPU time over the same window).
                row["deliveries_per_cpu_s"] = round(delivered / cpu_s, 1)
            row.update(_upstream_row(upstream, window, cpu.get("standin_cpu_s")))
            if published0 is not None and published1 is not None:
                # Token events the server's generations published in the window: beside the
                # stand-in's chunks/s, what was read ahead (or dropped) upstream.
                row["tokens_published_per_s"] = round((published1 - published0) / window, 1)
            if spy_out is not None:
                row["profile"] = str(spy_out)
            if not profiled:
                results.append(row)
            log("    " + _brief(row))
            if (rate, profiled) != phases[-1]:
                await asyncio.sleep(1.5 if rate <= 0 else 0.5)  # drain before the next phase
        closes = None
        with contextlib.suppress(Exception):
            closes = await asyncio.wait_for(target.slow_closes(), 5.0)
        for row in results:
            row["slow_consumer_closes"] = closes
    finally:
        for sock in sockets:
            sock.close()
        await group.stop()
    return results


#: The /metrics families a stall snapshot keeps (writer, generations, model streams, loop).
STALL_METRICS = (
    "cero_db_write_queue",
    "cero_db_write_failures",
    "cero_db_write_batches",
    "cero_db_finish_retries",
    "cero_generations",
    "cero_model_streams",
    "cero_live_actors",
    "cero_asyncio_tasks",
    "cero_event_loop_lag_seconds",
    "cero_admission_running",
    "cero_admission_waiting",
    "cero_tokens_streamed_total",
)


async def _stall_snapshot(target: Target, standin_url: str) -> dict[str, Any]:
    """The stand-in's stats (``finish_at`` included) and each server's writer, generation
    and model-stream lines of ``/metrics``, for a row whose answers did not end."""
    out: dict[str, Any] = {"at": time.time()}
    try:
        async with target.http.get(standin_url + "/bench/stats") as resp:
            out["standin"] = await resp.json()
    except (aiohttp.ClientError, ValueError) as exc:
        out["standin"] = repr(exc)
    servers: list[list[str]] = []
    for server in target.servers:
        try:
            async with asyncio.timeout(5.0):
                async with target.http.get(server.url + "/metrics", headers=METRICS_AUTH) as r:
                    text = await r.text()
            servers.append([ln for ln in text.splitlines() if ln.startswith(STALL_METRICS)])
        except (aiohttp.ClientError, TimeoutError) as exc:
            servers.append([repr(exc)])
    out["servers"] = servers
    return out


async def _admission(target: Target) -> dict[str, int | None]:
    """Admission control's counters summed over the target's servers (``/metrics``)."""
    if target.server.name == "baseline":
        return {}
    out: dict[str, int | None] = {}
    for key, name in (
        ("queued", "cero_admission_queued_total"),
        ("refused", "cero_overloaded_refusals_total"),
    ):
        try:
            out[key] = await asyncio.wait_for(target.counter_total(name), 5.0)
        except (aiohttp.ClientError, TimeoutError):
            out[key] = None
    return out


def _admission_delta(
    before: dict[str, int | None], after: dict[str, int | None]
) -> dict[str, int | None]:
    """Starts that waited in the admission queue / were refused ``503 overloaded`` from the
    phase's starts to the window's end (``starts_queued`` / ``starts_overloaded``)."""
    out: dict[str, int | None] = {}
    for key in ("queued", "refused"):
        a, b = after.get(key), before.get(key)
        out[f"starts_{'queued' if key == 'queued' else 'overloaded'}"] = (
            None if a is None or b is None else a - b
        )
    return out if before else {}


async def _standin_stats(env: Env) -> dict[str, int]:
    """The stand-in's running counters (``GET /bench/stats``); empty if it has none."""
    assert env.http is not None
    try:
        async with env.http.get(
            env.standin_url + "/bench/stats", timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            return {str(k): int(v) for k, v in (await resp.json(loads=orjson.loads)).items()}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


def _stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if not k.endswith("_max")} | {
        k: v for k, v in after.items() if k.endswith("_max")
    }


def _upstream_row(stats: dict[str, int], window: float, cpu_s: float | None) -> dict[str, Any]:
    """What the stand-in did for this target: the requests of the phase (from its start to
    the window's end) and their size; over the window, chunks streamed, their size, and its
    CPU per chunk."""
    if not stats:
        return {}
    chunks = stats.get("chunks", 0)
    requests = stats.get("requests", 0)
    out: dict[str, Any] = {
        "standin_requests": requests,
        "standin_request_bytes_avg": round(stats.get("request_bytes", 0) / requests)
        if requests
        else None,
        "standin_streams": stats.get("streams", 0),
        "standin_chunks_per_s": round(chunks / window, 1),
        "standin_chunk_bytes_avg": round(stats.get("chunk_bytes", 0) / chunks, 1)
        if chunks
        else None,
        # Chunks written while the connection's buffer was empty: each a send of its own.
        "standin_chunks_to_empty_buffer": round(stats.get("chunks_to_empty_buffer", 0) / chunks, 3)
        if chunks
        else None,
    }
    if cpu_s is not None and chunks:
        out["standin_us_per_chunk"] = round(1e6 * cpu_s / chunks, 1)
    return out


def _brief(row: dict[str, Any]) -> str:
    def ms(v: object) -> str:
        return "-" if v is None else f"{float(v):.1f}"  # type: ignore[arg-type]

    text = (
        f"{row['target']:<8} {row['database'] or '-':<10} {row['transport']} {row['loop']:<7} "
        f"subs={row['subscribers']:<5} "
        f"rate={row['rate']!s:<5} deliveries/s={row['deliveries_per_s']:>9.0f} "
        f"frames/s={row['frames_per_s']:>9.0f} p50={ms(row['p50_ms'])} p99={ms(row['p99_ms'])} "
        f"max={ms(row['max_ms'])} ms  cpu srv={row['server_cpu_pct']}% "
        f"(sys {row.get('server_sys_s')} of {row.get('server_cpu_s')} s) "
        f"cli={row['client_cpu_pct']}% standin={row['standin_cpu_pct']}% "
        f"machine={row['machine_cpu_pct']}%"
    )
    if row.get("sent_per_s"):
        text += f"  sent/s={row['sent_per_s']:.0f} ratio={row['delivered_ratio']:.3f}"
    if row.get("server_us_per_token") is not None:
        text += f"  {row['server_us_per_token']:.0f} us/token"
    if row.get("deliveries_per_cpu_s") is not None:
        text += f"  deliveries/cpu-s={row['deliveries_per_cpu_s']:.0f}"
    if row.get("standin_chunks_per_s") is not None:
        text += (
            f"  upstream: {row['standin_requests']} req, {row['standin_chunks_per_s']:.0f} "
            f"chunks/s (published {row.get('tokens_published_per_s', '-')}/s), "
            f"{row.get('standin_us_per_chunk')} us/chunk, "
            f"{row['standin_chunks_to_empty_buffer']} to empty buffer"
        )
    return text + (
        f"  starts {row['starts_s']:.2f}s p50={ms(row['starts_p50_ms'])} "
        f"max={ms(row['starts_max_ms'])} ms failed={row['starts_failed']}"
    )


async def client_cost(
    env: Env,
    client: str,
    streams: int,
    rate: float,
    warmup: float,
    duration: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """CPU per chunk of a bare client process (``bench.sdk_cost``): the google-genai SDK
    (``client="sdk"``) or raw aiohttp + orjson (``"raw"``) on the same stand-in streams."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sdk_cost",
        "--base-url",
        env.standin_url,
        "--client",
        client,
        "--streams",
        str(streams),
        "--rate",
        f"{rate:g}",
        "--warmup",
        f"{warmup:g}",
        "--duration",
        f"{duration:g}",
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), warmup + duration + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench.sdk_cost --client {client} failed ({proc.returncode})")
    result = orjson.loads(lines[-1])
    row = {
        "scenario": "2c",
        "target": "sdk" if client == "sdk" else "raw",
        "transport": "-",
        "loop": "uvloop",
        "database": "-",
        "conversations": streams,
        "subscribers": 0,
        "rate": rate,
        **result,
    }
    log(
        f"    {client}: {result['chunks_per_s']:.0f} chunks/s at {result['cpu_pct']}% CPU = "
        f"{result['us_per_chunk']} us/chunk ({result['errors']} errors)"
    )
    return row


async def idle_connections(
    env: Env,
    server: Server,
    users: list[tuple[str, str]],
    count: int,
    procs: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scenario 3: ``count`` authenticated, idle WebSocket connections; RSS per connection."""
    settle = min(2.0, 0.5 + count / 5000)
    await asyncio.sleep(settle)
    before = rss_bytes(server.pid)
    if server.name == "baseline":
        conns = [{"path": "/ws", "subscribe": []} for _ in range(count)]
    else:
        conns = [
            {"path": f"/api/ws?token={users[i % len(users)][0]}", "subscribe": []}
            for i in range(count)
        ]
    group = ClientGroup(env, "ws", HOST, server.port, conns, procs, concurrency=24)
    started = time.monotonic()
    try:
        ready = await group.start(timeout=600)
        setup = time.monotonic() - started
        await asyncio.sleep(settle)
        after = rss_bytes(server.pid)
        meter = CpuMeter({"server": [server.pid]})
        await asyncio.sleep(settle)
        idle_cpu = meter.read()["server_cpu_pct"]
    finally:
        await group.stop()
    row = {
        "scenario": "3",
        "target": server.name,
        "transport": "ws",
        "loop": server.loop,
        "database": server.database,
        "connections": ready,
        "failed": count - ready,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "kb_per_connection": round((after - before) / max(ready, 1) / 1024, 2),
        "connect_s": round(setup, 1),
        "handshakes_per_s": round(ready / max(setup, 1e-9), 0),
        "idle_server_cpu_pct": idle_cpu,
    }
    log(
        f"    {server.name}: {ready}/{count} connections in {setup:.1f}s, RSS "
        f"{row['rss_before_mb']} → {row['rss_after_mb']} MB = {row['kb_per_connection']} KB/conn"
    )
    return row


async def time_to_first_token(
    env: Env,
    server: Server,
    users: list[tuple[str, str]],
    turns: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scenario 4: ``POST /api/chat`` → first ``token``, minus the stand-in's own delay."""
    http = env.http
    assert http is not None
    target = Target(env, server)
    if server.name == "baseline":
        rooms: list[tuple[str, str]] = [("", "")]
        url = server.url + "/chat"
    else:
        rooms = await target.create_rooms(max(1, math.ceil(turns / 10)), users)
        url = server.url + "/api/chat"
    added: list[float] = []
    total: list[float] = []
    errors = 0
    run_id = secrets.token_hex(3)
    phases_before = None if server.name == "baseline" else await scrape_phases(http, server.url)
    for i in range(turns):
        room, token = rooms[i % len(rooms)]
        tag = f"{run_id}-{i}"
        body: dict[str, Any] = {"message": prompt(3, 0, tag)}
        headers = {}
        if server.name != "baseline":
            body["conversationId"] = room
            headers["Authorization"] = f"Bearer {token}"
        t_send = time.time()
        first: float | None = None
        stamp: float | None = None
        async with http.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                errors += 1
                await resp.read()
                continue
            async for line in resp.content:
                obj = orjson.loads(line)
                if obj.get("topic") == "token":
                    first = time.time()
                    stamp = parse_ts(str(obj.get("data")))
                    break
            await resp.read()
        async with http.get(f"{env.standin_url}/bench/arrival/{tag}") as resp:
            arrival = (await resp.json()).get("arrival")
        if first is None or stamp is None or arrival is None:
            errors += 1
            continue
        total.append(first - t_send)
        added.append((first - t_send) - (stamp - arrival))
    a = np.array(added) * 1000
    t = np.array(total) * 1000
    phases: dict[str, dict[str, float]] | None = None
    if phases_before is not None:
        phases = phase_table(phases_before, await scrape_phases(http, server.url))
    row = {
        "scenario": "4",
        "target": server.name,
        "loop": server.loop,
        "database": server.database or "-",
        "turns": len(added),
        "errors": errors,
        "added_p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "added_p99_ms": float(np.percentile(a, 99)) if a.size else None,
        "added_max_ms": float(a.max()) if a.size else None,
        "ttft_p50_ms": float(np.percentile(t, 50)) if t.size else None,
        "phases": phases,
    }
    log(
        f"    {server.name} {row['database']}: added TTFT p50={row['added_p50_ms']:.2f} ms "
        f"p99={row['added_p99_ms']:.2f} ms (total p50 {row['ttft_p50_ms']:.2f} ms, "
        f"{errors} errors)"
    )
    for name, ph in (phases or {}).items():
        log(
            f"      {name:<18} n={ph['count']:<4.0f} p50 {ph['p50_ms']:6.3f} ms  "
            f"mean {ph['mean_ms']:6.3f} ms  p90 {ph['p90_ms']:6.3f} ms"
        )
    return row


async def durable_commit_floor(database_url: str, n: int = 200) -> dict[str, float]:
    """The database's own floor in this run: ``n`` sequential one-row durable commits
    (asyncpg, ``synchronous_commit`` as configured, a scratch table in the run's
    database), p50/p90 in ms. A turn start is one such commit."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE bench_commit_floor (id serial PRIMARY KEY, v text)")
        times: list[float] = []
        for _ in range(n):
            started = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit_floor (v) VALUES ($1)", "x")
            times.append(time.perf_counter() - started)
        await conn.execute("DROP TABLE bench_commit_floor")
    finally:
        await conn.close()
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90))}


#: ``cero_turn_phase_seconds`` as scraped: phase → (sum, count, [(upper bound, cumulative)]).
Phases = dict[str, tuple[float, float, list[tuple[float, float]]]]


async def scrape_phases(http: aiohttp.ClientSession, url: str) -> Phases:
    """The server's turn-phase histogram (``GET /metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(url + "/metrics", headers=METRICS_AUTH) as resp:
        text = await resp.text()
    out: Phases = {}
    for family in text_string_to_metric_families(text):
        if family.name != "cero_turn_phase_seconds":
            continue
        for sample in family.samples:
            phase = sample.labels.get("phase", "")
            total, count, buckets = out.get(phase, (0.0, 0.0, []))
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            out[phase] = (total, count, buckets)
    return out


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank q."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, cumulative
    return lower


def phase_table(before: Phases, after: Phases) -> dict[str, dict[str, float]]:
    """Per phase over the run (``after − before``): count, mean, p50 and p90 (ms; the
    quantiles interpolated within the histogram's buckets, 50 µs wide near 0.1–0.5 ms)."""
    table: dict[str, dict[str, float]] = {}
    for phase, (total, count, buckets) in after.items():
        total0, count0, buckets0 = before.get(phase, (0.0, 0.0, []))
        n = count - count0
        if n <= 0:
            continue
        earlier = dict(buckets0)
        delta = sorted((le, c - earlier.get(le, 0.0)) for le, c in buckets)
        table[phase] = {
            "count": n,
            "mean_ms": (total - total0) / n * 1000,
            "p50_ms": _quantile(delta, 0.5) * 1000,
            "p90_ms": _quantile(delta, 0.9) * 1000,
        }
    return dict(sorted(table.items(), key=lambda item: PHASE_ORDER.get(item[0], 99)))


#: The order of a turn's phases in tables (actors/generation_timing.py describes them).
PHASE_ORDER = {name: i for i, name in enumerate(PHASES)}


Step = Callable[[], Awaitable[None]]
