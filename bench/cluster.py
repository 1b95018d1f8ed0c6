"""Cluster mode's cost (issue 11): the Redis hop against the in-memory path, same run.

Three server set-ups on one fresh PostgreSQL database, the same stand-in and the same
client processes (``bench/clients.py``), one conversation created through process A (so A
owns it):

- ``memory``: one process, no Redis (today's path);
- ``cluster1``: one process with ``CERO_REDIS_URL`` (every event also goes to Redis);
- ``cluster2``: two processes A and B on Redis; subscribers on B read the log through
  B's relay.

Per set-up: time to first token (scenario 4's method, on A), a 50 tok/s phase with the
subscribers split between the processes (all on A without B), and an as-fast-as-possible
phase with the subscribers on B only (on A without B). Redis round trips per token are
(A's log pipelines + B's relay reads) / tokens streamed in the window, from ``/metrics``.

Run: ``.venv/bin/python -m bench.cluster --subs 1000 --duration 8``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import HOST
from bench.scenarios import (
    FAST_TOKENS,
    METRICS_AUTH,
    ClientGroup,
    Config,
    Env,
    Server,
    Target,
    _sleep_until,
    _start_all,
    percentiles,
    time_to_first_token,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


def log(message: str) -> None:
    print(message, flush=True)


async def metrics(env: Env, server: Server) -> dict[str, float]:
    assert env.http is not None
    async with env.http.get(server.url + "/metrics", headers=METRICS_AUTH) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cero_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def phase(
    env: Env,
    owner: Target,
    room: tuple[str, str],
    groups: list[tuple[str, ClientGroup]],
    servers: list[Server],
    rate: float,
    cfg: Config,
) -> list[dict[str, Any]]:
    tokens = FAST_TOKENS if rate <= 0 else int(rate * (cfg.warmup + cfg.duration + 4)) + 10
    await _start_all(owner, [room], tokens, rate)
    t0 = time.time() + cfg.warmup
    t1 = t0 + cfg.duration
    measuring = [asyncio.ensure_future(group.measure(t0, t1)) for _, group in groups]
    await _sleep_until(t0)
    before = [await metrics(env, s) for s in servers]
    await _sleep_until(t1)
    after = [await metrics(env, s) for s in servers]
    results = await asyncio.gather(*measuring)
    await owner.stop_streams([room])
    await asyncio.sleep(1.0)

    def delta(i: int, name: str) -> float:
        return after[i].get(name, 0.0) - before[i].get(name, 0.0)

    streamed = delta(0, "cero_tokens_streamed_total")
    trips = delta(0, "cero_cluster_log_pipelines_total") + sum(
        delta(i, "cero_cluster_relay_reads_total") for i in range(1, len(servers))
    )
    rows = []
    for (where, _), (totals, samples) in zip(groups, results, strict=True):
        row: dict[str, Any] = {
            "rate": "fast" if rate <= 0 else rate,
            "subscribers_on": where,
            "subscribers": int(totals.get("ready", 0)),
            "deliveries_per_s": totals.get("tokens", 0) / cfg.duration,
            "tokens_streamed_per_s": streamed / cfg.duration,
            "redis_round_trips_per_token": (trips / streamed) if streamed else None,
            **percentiles(samples),
        }
        rows.append(row)
        p99 = row["p99_ms"]
        log(
            f"      {where}: {row['deliveries_per_s']:,.0f} deliveries/s, p99 "
            f"{'-' if p99 is None else f'{p99:.1f}'} ms, {row['tokens_streamed_per_s']:,.0f} "
            f"tok/s, Redis round trips/token {row['redis_round_trips_per_token']}"
        )
    return rows


async def setup_run(
    env: Env, cfg: Config, pg: str, users: list[tuple[str, str]], mode: str, args: Any
) -> dict[str, Any]:
    # A loaded machine must not turn the starts into `503 overloaded`: measure, not refuse.
    extra: dict[str, str] = {"CERO_MAX_LOOP_LAG": "0"}
    if mode != "memory":
        extra["CERO_REDIS_URL"] = REDIS_URL
        extra["CERO_REDIS_PREFIX"] = f"cerobench:{secrets.token_hex(4)}:"
    a = await env.start_project(pg, extra_env=extra)
    servers = [a]
    if mode == "cluster2":
        servers.append(await env.start_project(pg, extra_env=extra))
    out: dict[str, Any] = {"mode": mode, "phases": []}
    groups: list[ClientGroup] = []
    try:
        if mode != "cluster2":
            out["ttft"] = await time_to_first_token(env, a, users, args.turns, log=log)
        owner = Target(env, a)
        room = (await owner.create_rooms(1, users))[0]
        b = servers[-1]
        half = args.subs // 2
        split = (
            [("A", a, args.subs - half), ("B", b, half)] if b is not a else [("A", a, args.subs)]
        )
        rate_groups: list[tuple[str, ClientGroup]] = []
        for where, server, count in split:
            conns = [Target(env, server).ws_conn(room[0], room[1]) for _ in range(count)]
            group = ClientGroup(env, "ws", HOST, server.port, conns, args.procs)
            groups.append(group)
            await group.start()
            rate_groups.append((where, group))
        await asyncio.sleep(1.0 + args.subs / 1000)
        log(f"    {mode}: 50 tok/s, subscribers {[(w, c) for w, _, c in split]}")
        out["phases"] += await phase(env, owner, room, rate_groups, servers, 50.0, cfg)
        for group in groups:
            await group.stop()
        groups = []
        where = "B" if b is not a else "A"
        conns = [Target(env, b).ws_conn(room[0], room[1]) for _ in range(args.subs)]
        fast = ClientGroup(env, "ws", HOST, b.port, conns, args.procs)
        groups.append(fast)
        await fast.start()
        await asyncio.sleep(1.0 + args.subs / 1000)
        log(f"    {mode}: as fast as possible, {args.subs} subscribers on {where}")
        out["phases"] += await phase(env, owner, room, [(where, fast)], servers, 0.0, cfg)
    finally:
        for group in groups:
            await group.stop()
        for server in servers:
            env.stop(server)
    return out


async def main_async(args: Any) -> dict[str, Any]:
    cfg = Config(duration=args.duration, warmup=args.warmup)
    tmp = Path(tempfile.mkdtemp(prefix="cero-bench-cluster-"))
    env = Env(tmp, cfg)
    await env.open()
    try:
        pg = await env.new_postgres()
        users = await env.seed(pg, 4)
        runs = []
        for mode in args.modes.split(","):
            log(f"  {mode}")
            try:
                runs.append(await setup_run(env, cfg, pg, users, mode, args))
            except Exception as exc:  # one failed set-up must not lose the others' numbers
                log(f"    {mode} failed: {exc!r}")
                runs.append({"mode": mode, "error": repr(exc)})
        return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}
    finally:
        with contextlib.suppress(Exception):
            await env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2, help="client processes per group")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--turns", type=int, default=100, help="TTFT samples")
    parser.add_argument("--modes", default="memory,cluster1,cluster2")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    out = (
        Path(__file__).resolve().parent
        / "results"
        / f"cluster-{result['when'].replace(':', '-')}.json"
    )
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    log(f"written {out}")


if __name__ == "__main__":
    main()
