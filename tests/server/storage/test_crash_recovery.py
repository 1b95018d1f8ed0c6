"""Kill the server mid-answer: after a restart the answer is ``interrupted`` and holds
what was flushed up to at most ~1 s before the kill."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import orjson
import pytest

from server.storage import db
from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.live_clients import post_chat
from tests.server_process import ServerProcess, serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


def _start(
    database_url: str, gemini_url: str, cwd: Path
) -> AbstractAsyncContextManager[ServerProcess]:
    return serve(
        database_url,
        cwd=cwd,
        env={
            "GEMINI_API_KEY": "test-key",
            "CERO_GEMINI_BASE_URL": gemini_url,
            "CERO_FLUSH_INTERVAL": "0.5",
            "CERO_LOG_LEVEL": "warning",
        },
    )


async def test_kill_mid_answer_then_restart(database_url: str, tmp_path: Path) -> None:
    await db.migrate(db.bind(database_url))
    token, _ = await make_user_session("Crash")
    fake = FakeGemini()
    gemini_url = await fake.start()
    fake.enqueue(Script(chunks=[f"tok{i:04d} " for i in range(2000)], chunk_delay=0.01))
    try:
        async with _start(database_url, gemini_url, tmp_path) as server:
            received: list[str] = []
            stamps: list[float] = []
            message_id = ""
            async with aiohttp.ClientSession() as http:
                async with post_chat(
                    http, server.url, token, message="crash test", aiModel="gemini-2.5-flash-lite"
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
                                await server.kill()
                                break
        seen_before = "".join(
            t for t, s in zip(received, stamps, strict=True) if s <= killed_at - 1.0
        )
        full = "".join(received)

        async with _start(database_url, gemini_url, tmp_path) as server:
            row = await Message.select().where(Message.id == message_id).first().run()
            assert row is not None
            assert row["status"] == "interrupted"
            content = row["content"]
            assert full.startswith(content)
            assert len(content) >= len(seen_before), (len(content), len(seen_before))
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"{server.url}/api/conversations/{row['conversation_id']}/messages",
                    headers=bearer(token),
                ) as r:
                    body = await r.json()
            assert body["messages"][-1]["status"] == "interrupted"
    finally:
        await fake.stop()
