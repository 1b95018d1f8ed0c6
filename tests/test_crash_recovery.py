"""Kill the server mid-answer: after a restart the answer is ``interrupted`` and holds
what was flushed up to at most ~1 s before the kill."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from server import db
from server.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.fakes.gemini import FakeGemini, Script

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(database_url: str, port: int, gemini_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERO_", "BETTER_AUTH_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=database_url,
        CERO_PORT=str(port),
        GEMINI_API_KEY="test-key",
        CERO_GEMINI_BASE_URL=gemini_url,
        BETTER_AUTH_SECRET="s" * 40,
        CERO_FLUSH_INTERVAL="0.5",
        CERO_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not start")


async def test_kill_mid_answer_then_restart(database_url: str, tmp_path: Path) -> None:
    await db.migrate(db.bind(database_url))
    token, _ = await make_user_session("Crash")
    fake = FakeGemini()
    gemini_url = await fake.start()
    fake.enqueue(Script(chunks=[f"tok{i:04d} " for i in range(2000)], chunk_delay=0.01))
    port = _free_port()
    proc = _start(database_url, port, gemini_url, tmp_path)
    try:
        await _wait_up(port, proc)
        received: list[str] = []
        stamps: list[float] = []
        message_id = ""
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/api/chat",
                json={"message": "crash test", "aiModel": "gemini-2.5-flash-lite"},
                headers=bearer(token),
            ) as resp:
                async for raw in resp.content:
                    line = orjson.loads(raw)
                    if line["topic"] == "init":
                        message_id = line["data"]["messageId"]
                    elif line["topic"] == "token":
                        received.append(line["data"])
                        stamps.append(time.monotonic())
                        if len(received) == 250:
                            killed_at = time.monotonic()
                            proc.send_signal(signal.SIGKILL)
                            break
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen_before = "".join(t for t, s in zip(received, stamps, strict=True) if s <= killed_at - 1.0)
    full = "".join(received)

    port = _free_port()
    proc = _start(database_url, port, gemini_url, tmp_path)
    try:
        await _wait_up(port, proc)
        async with aiohttp.ClientSession() as http:
            row = await Message.select().where(Message.id == message_id).first().run()
            assert row is not None
            assert row["status"] == "interrupted"
            content = row["content"]
            assert full.startswith(content)
            assert len(content) >= len(seen_before), (len(content), len(seen_before))
            async with http.get(
                f"http://127.0.0.1:{port}/api/conversations/{row['conversation_id']}/messages",
                headers=bearer(token),
            ) as r:
                body = await r.json()
            assert body["messages"][-1]["status"] == "interrupted"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        await fake.stop()
