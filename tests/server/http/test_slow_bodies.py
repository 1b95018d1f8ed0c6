"""Slow request bodies (issue 20, item 1), over loopback.

The outside probe: anonymous ``POST /api/auth/device/token`` with ``Content-Length:
100000`` and one body byte every 5 s, from 800 connections, held every connection slot for
40 s and more, and everyone else got ``503 over_capacity`` (``/healthz`` kept answering).
Now a body must arrive within ``CERO_BODY_TIMEOUT`` of its head and at
``CERO_MIN_BODY_RATE`` on average after a 2 s grace, on every route:

- too slow → ``408 request_timeout`` JSON, ``Connection: close``, counted as
  ``cero_limit_refusals_total{limit="slow_body"}``;
- a large body at a normal pace is still served (the WebSocket and streamed answers, which
  have no request body, are in ``tests/server/limits/test_limits.py``);
- a few hundred slow bodies against ``cero-api serve`` under a low ``ulimit -n``: the slots
  come back within the deadline, another signed-in user's chat is served, ``/readyz``
  answers 200 throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from server.storage import db
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.process_stats import refusals
from tests.server.limits.test_limits import OTHER, json_error, parse, serving, short_chat
from tests.server_process import serve

BALANCER = "127.0.0.9"
#: How often a slow client sends its next body byte (the probe: every 5 s).
DRIP_EVERY = 0.5


async def slow_body(
    url: str,
    head: bytes,
    *,
    local: str | None = None,
    first: bytes = b"{",
    within: float = 20.0,
) -> tuple[bytes, float]:
    """Send ``head`` and ``first``, then one more body byte every ``DRIP_EVERY`` s until the
    server closes the connection; return what it answered (what arrived before a reset, if
    it reset: a refusal past the lingering ones closes at once) and how long it took."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), local_addr=(local, 0) if local else None
    )
    started = time.monotonic()

    async def drip() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(head + first)
            while True:
                await asyncio.sleep(DRIP_EVERY)  # the pace of the attack, not a wait
                writer.write(b" ")
                await writer.drain()

    async def read_all() -> bytes:
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                answer += chunk
        return answer

    dripping = asyncio.ensure_future(drip())
    try:
        answer = await asyncio.wait_for(read_all(), within)
    finally:
        dripping.cancel()
        writer.close()
    return answer, time.monotonic() - started


def post_head(path: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_slow_body_is_408_by_rate_and_by_deadline(tmp_path: Path) -> None:
    # The rate: 2 bytes a second against a minimum of 1,000, far within the 30 s deadline.
    async with serving(tmp_path, body_timeout=30, min_body_rate=1000) as (url, guard):
        token, _ = await make_user_session("Slow")
        head = post_head("/api/chat", 5000, {**bearer(token), "Content-Type": "application/json"})
        answer, took = await slow_body(url, head)
        status, headers, body = parse(answer)
        assert status == 408, answer
        assert json_error(headers, body)["code"] == "request_timeout"
        assert headers["connection"] == "close"
        assert took < 15, took  # the rate closed it, not the 30 s deadline
        await until(lambda: guard.total == 0, 5, what="the slot is free")
        assert await short_chat(url, bearer(token))  # the user is served again
        async with aiohttp.ClientSession() as http:
            assert await refusals(http, url, "slow_body") == 1
    # The deadline: a steady trickle well above the minimum rate, but never finished.
    async with serving(tmp_path, body_timeout=1, min_body_rate=1) as (url, guard):
        head = post_head("/api/auth/device/token", 100_000, {"Content-Type": "application/json"})
        answer, took = await slow_body(url, head, first=b'{"a": 1')
        status, headers, body = parse(answer)
        assert status == 408, answer
        # Under /api/auth/ errors are OAuth-shaped (CONTRACT.md).
        assert orjson.loads(body)["error"] == "request_timeout", body
        assert headers["connection"] == "close"
        await until(lambda: guard.total == 0, 5, what="the slot is free")


async def test_large_body_at_a_normal_pace_is_served(tmp_path: Path) -> None:
    """Longer than the grace and the deadline's half, well above the minimum rate."""
    async with serving(tmp_path, body_timeout=4, min_body_rate=1024) as (url, _):
        token, _ = await make_user_session("Big")
        # 400 KB of valid JSON (trailing whitespace), 20 KB every 0.1 s: about 2 s.
        payload = orjson.dumps({"message": "hi", "aiModel": "demo"}) + b" " * 400_000

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 20_000):
                yield payload[start : start + 20_000]
                await asyncio.sleep(0.1)  # the client's pace, not a wait

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/api/chat",
                data=chunks(),
                headers={
                    **bearer(token),
                    "Content-Type": "application/json",
                    "Content-Length": str(len(payload)),
                },
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
        assert lines[-1]["topic"] == "done", lines[-1]
        # And a body near CERO_MAX_BODY sent at once.
        big = orjson.dumps({"message": "hi", "aiModel": "demo"}) + b" " * 1_000_000
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "/api/chat",
                data=big,
                headers={**bearer(token), "Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert b'"done"' in await resp.read()


@pytest.mark.slow
async def test_slow_body_flood_under_low_nofile_limit(tmp_path: Path) -> None:
    """The probe, scaled: 300 slow bodies to ``/api/auth/device/token`` from four addresses
    against ``cero-api serve`` under ``ulimit -n`` 128 soft / 256 hard (176 slots). Every
    slot is taken, then given back within the deadline; meanwhile another signed-in user's
    chat is served once they are, and ``/readyz`` answers 200 throughout. (Before: the
    slots stayed taken as long as the bytes kept coming, and the chat got 503.)"""
    database_url = f"sqlite:///{tmp_path / 'cero.db'}"
    await db.migrate(db.bind(database_url))
    token, _ = await make_user_session("Bystander")
    body_timeout = 4.0
    env: dict[str, str | None] = {
        "CERO_FD_HEADROOM": "64",
        "CERO_CONNECTION_RESERVE": "8",
        "CERO_MAX_CONNECTIONS_PER_IP": "1000",
        "CERO_BODY_TIMEOUT": str(body_timeout),
        # The deadline alone (the rate is another test's): slots stay taken long enough
        # to see the attack work first.
        "CERO_MIN_BODY_RATE": "0",
        "CERO_LOG_LEVEL": "warning",
    }

    def low_nofile() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    async with serve(
        database_url,
        cwd=tmp_path,
        env=env,
        command=[str(Path(sys.executable).parent / "cero-api"), "serve"],
        preexec_fn=low_nofile,
    ) as server:
        url = server.url
        readyz: list[int | str] = []

        async def watch_readyz() -> None:
            # A load balancer's address of its own (a reserved slot is one per address).
            connector = aiohttp.TCPConnector(local_addr=(BALANCER, 0), force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                while True:
                    try:
                        async with http.get(
                            url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)
                        ) as resp:
                            readyz.append(resp.status)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        readyz.append(type(exc).__name__)
                    await asyncio.sleep(0.1)  # the probe's interval

        head = post_head(
            "/api/auth/device/token",
            100_000,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        flood = [
            asyncio.ensure_future(
                slow_body(url, head, local=f"127.0.0.{3 + n % 4}", first=b"g", within=30)
            )
            for n in range(300)
        ]
        watcher: asyncio.Future[None] | None = None
        try:
            # Full (the excess was answered 503 at once, every slot is a slow body's): the
            # probes answer, another user's chat is refused...
            await until(lambda: sum(t.done() for t in flood) >= 100, 10, what="flood is in")
            watcher = asyncio.ensure_future(watch_readyz())
            assert await chat_status(url, token) == 503

            # ...until the slow bodies are cut off: then it is served.
            async def served() -> bool:
                return await chat_status(url, token) == 200

            await until(served, body_timeout + 10, every=0.2, what="a chat is served")
            results = await asyncio.gather(*flood)
        finally:
            for task in flood:
                task.cancel()
            if watcher is not None:
                watcher.cancel()
        timed_out = over_capacity = reset = 0
        for answer, took in results:
            assert took < body_timeout + 5, took  # every slot is back within the deadline
            if not answer:
                reset += 1
                continue
            status, headers, body = parse(answer)
            data = orjson.loads(body)
            # OAuth-shaped under /api/auth/; refused at accept, before any path was read,
            # in the plain shape.
            code = data.get("code") or data["error"]
            assert headers["connection"] == "close", answer
            if status == 408:
                assert code == "request_timeout", body
                timed_out += 1
            else:
                assert (status, code) == (503, "over_capacity"), answer
                over_capacity += 1
        # The 176 slots' bodies were cut off with 408 (a reset may beat an answer, rarely).
        assert timed_out >= 170, (timed_out, over_capacity, reset)
        assert readyz and set(readyz) == {200}, readyz
        async with aiohttp.ClientSession() as http:
            assert await refusals(http, url, "slow_body") >= timed_out
        assert "unhandled_error" not in server.log() and "Traceback" not in server.log()


async def chat_status(url: str, token: str) -> int:
    """The status of one short chat from another address (its answer read to the end)."""
    connector = aiohttp.TCPConnector(local_addr=(OTHER, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(
            url + "/api/chat",
            json={"message": "hi", "aiModel": "demo"},
            headers=bearer(token),
            timeout=aiohttp.ClientTimeout(total=20),
        ) as resp,
    ):
        body = await resp.read()
        if resp.status == 200:
            assert b'"done"' in body, body
        return resp.status
