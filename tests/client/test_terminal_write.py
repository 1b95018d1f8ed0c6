"""A terminal write that fails is retried, then stored by the janitor (issue 15, item 2).

The database refuses writes while an answer ends (SQLite: another connection holds the
write lock; PostgreSQL: another transaction holds an exclusive lock on ``message``). The
actor retries for ``CERO_DB_COMMIT_TIMEOUT``, then ends the generation with ``error``;
once the lock is gone the row is ``error`` with the whole text, never left ``streaming``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from server.storage.batch_writer import WRITER
from server.storage.tables import Message
from tests.auth_helpers import make_user_session
from tests.conditions import until
from tests.conftest import Live, live_app, write_lock
from tests.live_clients import post_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fragile(database_url: str) -> AsyncIterator[tuple[Live, str]]:
    async with live_app(
        database_url, demo_token_delay=0.01, db_write_timeout=0.3, db_commit_timeout=1.0
    ) as live:
        yield live, database_url


async def test_a_failed_terminal_write_ends_as_error_and_is_stored_later(
    fragile: tuple[Live, str],
) -> None:
    live, database_url = fragile
    token, _ = await make_user_session("Fragile")
    lines: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, live.url, token, message="hello", aiModel="demo") as r:
            assert r.status == 200
            async with write_lock(database_url):
                async for raw in r.content:
                    if raw.strip():
                        lines.append(orjson.loads(raw))
                conversation_id = lines[0]["data"]["conversationId"]
                assert lines[-1]["topic"] == "error", lines[-1]
                text = "".join(line["data"] for line in lines if line["topic"] == "token")
                assert text
            # Still refused while the lock was held: the janitor has it.

    async def stored() -> bool:
        rows = (
            await Message.select(Message.status, Message.content)
            .where((Message.conversation_id == conversation_id) & (Message.role == "assistant"))
            .run()
        )
        return bool(rows) and rows[0]["status"] == "error" and rows[0]["content"] == text

    await until(stored, 15, every=0.1)
    # The server writes again: a new turn completes.
    async with aiohttp.ClientSession() as http:
        async with post_chat(
            http, live.url, token, message="again", aiModel="demo", conversationId=conversation_id
        ) as r:
            assert r.status == 200
            body = await r.read()
    assert b'"topic":"done"' in body
    assert live.app[WRITER].last_error is None
