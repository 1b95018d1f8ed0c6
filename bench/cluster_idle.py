"""Cluster mode's background cost: server CPU and Redis commands per second with viewers and
slow (or no) streams.

Scenario 2's layout (``--procs 2``: room ``i`` created and started through process
``i % N``, its subscriber ``j`` on process ``(i + j) % N``) on a fresh PostgreSQL database
and a private Redis (``redis-server --port P``, started and stopped here, so its
``INFO commandstats`` counts this run alone). After the set-up settles, ``--windows``
windows of ``--window`` seconds each: per window the servers' CPU (psutil user + system,
summed), and Redis commands per second by kind (``INFO commandstats`` diff). With
``--spy DIR`` py-spy records every server during the last window (raw collapsed stacks).

Run: ``python -m bench.cluster_idle --procs 2 --convs 100 --rate 1`` (``--procs 1``: one
process without Redis, the floor; ``--rate 0``: subscribers only, no stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis.asyncio as aioredis

from bench.common import HOST, free_port
from bench.scenarios import ClientGroup, Config, Env, Spread, Target, _start_all


def log(message: str) -> None:
    print(message, flush=True)


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def commandstats(client: aioredis.Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = Config()
    tmp = Path(tempfile.mkdtemp(prefix="cluster-idle-"))
    env = Env(tmp, cfg)
    rport = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclient = aioredis.Redis(host=HOST, port=rport)
    out: dict[str, Any] = {"args": vars(args), "windows": []}
    try:
        for _ in range(50):
            with contextlib.suppress(Exception):
                await rclient.ping()
                break
            await asyncio.sleep(0.1)
        await env.open()
        pg = await env.new_postgres()
        users = await env.seed(pg, 16)
        extra = {"CERO_MAX_LOOP_LAG": "0"}
        if args.procs > 1:
            extra["CERO_REDIS_URL"] = f"redis://{HOST}:{rport}/0"
            extra["CERO_REDIS_PREFIX"] = f"idle:{secrets.token_hex(4)}:"
        servers = [await env.start_project(pg, extra_env=extra) for _ in range(args.procs)]
        target: Target = Spread(env, servers) if len(servers) > 1 else Target(env, servers[0])
        rooms = await target.create_rooms(args.convs, users)
        conns = []
        for i, (room, token) in enumerate(rooms):
            for j in range(args.subs):
                at = target.sub_target(i, j)
                conn = at.ws_conn(room, token)
                conn["port"] = at.server.port
                conns.append(conn)
        group = ClientGroup(env, "ws", HOST, servers[0].port, conns, 2)
        ready = await group.start()
        log(f"{ready} subscribers ready")
        if args.rate > 0:
            total = args.windows * args.window + args.settle + 30
            starts, _ = await _start_all(target, rooms, int(args.rate * total) + 10, args.rate)
            log(f"starts: {starts}")
        await asyncio.sleep(args.settle)
        pids = [s.pid for s in servers]
        for w in range(args.windows):
            spies: list[subprocess.Popen[bytes]] = []
            if args.spy and w == args.windows - 1:
                spy_dir = Path(args.spy)
                spy_dir.mkdir(parents=True, exist_ok=True)
                for k, pid in enumerate(pids):
                    spies.append(
                        subprocess.Popen(
                            [
                                str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "-p",
                                str(pid),
                                "-d",
                                str(int(args.window)),
                                "-r",
                                str(args.spy_rate),
                                "-f",
                                "raw",
                                "--nonblocking",
                                "-o",
                                str(spy_dir / f"server{k}.txt"),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            c0 = [cpu_s(p) for p in pids]
            s0 = await commandstats(rclient)
            t0 = time.monotonic()
            await asyncio.sleep(args.window)
            elapsed = time.monotonic() - t0
            c1 = [cpu_s(p) for p in pids]
            s1 = await commandstats(rclient)
            for spy in spies:
                spy.wait(timeout=60)
            per = [(b - a) / elapsed * 100 for a, b in zip(c0, c1, strict=True)]
            cmds = {
                k: round((v - s0.get(k, 0)) / elapsed, 1)
                for k, v in s1.items()
                if v - s0.get(k, 0) > 0 and k != "info"
            }
            row = {
                "cpu_pct": [round(p, 2) for p in per],
                "cpu_pct_total": round(sum(per), 2),
                "redis_cmds_per_s": dict(sorted(cmds.items(), key=lambda kv: -kv[1])),
                "redis_cmds_total_per_s": round(sum(cmds.values()), 1),
                "load": Path("/proc/loadavg").read_text().split()[0],
            }
            out["windows"].append(row)
            log(orjson.dumps(row).decode())
        await group.stop()
    finally:
        await env.close()
        await rclient.aclose()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--convs", type=int, default=100)
    p.add_argument("--subs", type=int, default=2)
    p.add_argument("--rate", type=float, default=1.0, help="tokens/s per stream; 0: no streams")
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--spy", help="py-spy raw profiles of the last window into this directory")
    p.add_argument("--spy-rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
