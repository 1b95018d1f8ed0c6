"""Redis commands and round trips per turn and per token in cluster mode (issue 21).

One cluster-mode process on a private ``redis-server`` (its own port, no persistence,
stopped by pid at the end) and the bench stand-in as the model. Redis itself counts:
``INFO commandstats`` (commands by name) and ``INFO stats`` ``total_reads_processed``
(socket reads: one per request or pipeline the server read, i.e. round trips) before and
after each step. What the background loops send meanwhile (health pings, ``BLPOP`` and
``XREAD BLOCK`` timeouts, renewals, presence) is measured on an idle process first and
subtracted pro rata.

Steps: a turn that starts a conversation, a turn in it (the process already holds it),
a turn in a conversation this process has not seen (as after a restart), then
``--concurrent`` turns at once in as many new conversations (per turn and per token).

Run: ``.venv/bin/python -m bench.redis_trips --tokens 40 --concurrent 100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

from bench.common import HOST, free_port, prompt
from bench.scenarios import Config, Env

IDLE_S = 4.0


def log(message: str) -> None:
    print(message, flush=True)


async def counts(client: redis.Redis) -> dict[str, int]:
    """Commands by name, plus ``_reads`` (round trips the server read)."""
    stats: dict[str, Any] = await client.info("commandstats")
    out = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    out["_reads"] = int((await client.info("stats"))["total_reads_processed"])
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    return {
        n: after.get(n, 0) - before.get(n, 0) for n in names if after.get(n, 0) != before.get(n, 0)
    }


async def turn(
    http: aiohttp.ClientSession, url: str, token: str, tokens: int, rate: float, conv: str | None
) -> tuple[str, int]:
    body: dict[str, Any] = {"message": prompt(tokens, rate)}
    if conv is not None:
        body["conversationId"] = conv
    async with http.post(
        url + "/api/chat", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"chat: {resp.status} {raw[:200]!r}")
        return resp.headers["X-Conversation-Id"], raw.count(b'"token"')


class Meter:
    def __init__(self, client: redis.Redis, idle: dict[str, float]) -> None:
        self.client = client
        self.idle = idle  # per second

    async def measure(self, label: str, step: Any, turns: int, tokens: int) -> dict[str, Any]:
        await asyncio.sleep(0.5)  # what the previous step released is written
        before = await counts(self.client)
        t0 = time.monotonic()
        await step()
        await asyncio.sleep(0.5)  # the lease given back, the slot removed
        elapsed = time.monotonic() - t0
        after = await counts(self.client)
        raw = delta(before, after)
        net = {n: v - self.idle.get(n, 0.0) * elapsed for n, v in raw.items()}
        commands = sum(v for n, v in net.items() if n not in ("_reads", "info"))
        reads = net.get("_reads", 0.0) - 2  # our own INFO calls
        row = {
            "step": label,
            "turns": turns,
            "tokens": tokens,
            "commands": round(commands, 1),
            "round_trips": round(reads, 1),
            "commands_per_turn": round(commands / turns, 2),
            "round_trips_per_turn": round(reads / turns, 2),
            "by_command": {n: round(v, 1) for n, v in sorted(net.items()) if abs(v) >= 0.5},
        }
        log(
            f"  {label}: {turns} turn(s), {tokens} tokens: {row['commands']} commands, "
            f"{row['round_trips']} round trips; per turn {row['commands_per_turn']} / "
            f"{row['round_trips_per_turn']}"
        )
        log(f"    {row['by_command']}")
        return row


async def main_async(args: Any) -> list[dict[str, Any]]:
    cfg = Config(duration=1, warmup=0)
    tmp = Path(tempfile.mkdtemp(prefix="cero-bench-trips-"))
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://{HOST}:{port}/0"
    client = redis.from_url(url)
    env = Env(tmp, cfg)
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                await client.ping()
                break
            await asyncio.sleep(0.05)
        await env.open()
        pg = await env.new_postgres()
        users = await env.seed(pg, 1)
        token = users[0][0]
        server = await env.start_project(
            pg,
            extra_env={
                "CERO_REDIS_URL": url,
                "CERO_REDIS_PREFIX": f"cerotrips:{secrets.token_hex(3)}:",
                "CERO_MAX_LOOP_LAG": "0",
            },
        )
        assert env.http is not None
        http = env.http
        await asyncio.sleep(1.0)
        await client.config_resetstat()
        before = await counts(client)
        await asyncio.sleep(IDLE_S)
        after = await counts(client)
        idle = {n: v / IDLE_S for n, v in delta(before, after).items()}
        log(f"  idle, per second: { ({n: round(v, 2) for n, v in idle.items()}) }")
        meter = Meter(client, idle)
        n = args.tokens
        convs: list[str] = []

        async def first() -> None:
            cid, _ = await turn(http, server.url, token, n, args.rate, None)
            convs.append(cid)

        async def again() -> None:
            await turn(http, server.url, token, n, args.rate, convs[0])

        rows.append(await meter.measure("new conversation", first, 1, n))
        rows.append(await meter.measure("next turn, lease held", again, 1, n))
        # The actor and the lease go once the conversation is idle: the same as a turn in a
        # conversation this process has not seen (the state is in Redis and the database).
        await asyncio.sleep(args.idle_wait)
        rows.append(await meter.measure(f"next turn after {args.idle_wait:g} s idle", again, 1, n))

        async def many() -> None:
            await asyncio.gather(
                *(turn(http, server.url, token, n, args.rate, None) for _ in range(args.concurrent))
            )

        rows.append(
            await meter.measure(
                f"{args.concurrent} at once", many, args.concurrent, n * args.concurrent
            )
        )
        for row in rows:
            row["commands_per_token"] = round(row["commands"] / row["tokens"], 3)
            row["round_trips_per_token"] = round(row["round_trips"] / row["tokens"], 3)
        return rows
    finally:
        with contextlib.suppress(Exception):
            await env.close()
        await client.aclose()
        redis_proc.terminate()
        redis_proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s (0: as fast)")
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--idle-wait", type=float, default=0.0)
    args = parser.parse_args()
    for row in asyncio.run(main_async(args)):
        print(row)


if __name__ == "__main__":
    main()
