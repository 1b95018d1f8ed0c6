"""The model failing mid-answer (issue 13), through the whole server: the real google-genai
SDK against the local stand-in, one fault per case after two chunks of text.

For each fault: the sender (NDJSON) and a watcher on a WebSocket are told the same thing
(the tokens, then ``error`` with the contract's code), the stored answer is ``error`` with
exactly the text they received, and the conversation serves its next turn normally.

- stall: no chunk for longer than ``CERO_GEMINI_CHUNK_TIMEOUT`` → ``upstream_timeout``
- reset: the model's connection closed mid-stream → ``upstream_unavailable``
- malformed: a chunk whose data is not JSON → ``upstream_unavailable`` (was: ``internal``,
  with the raw chunk in the message)
- error: an error event mid-stream (HTTP 500 in the body) → ``upstream_unavailable``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import WsPeer, chat, check_seq, token_text

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"
CHUNKS: list[str | dict[str, Any]] = ["one ", "two ", "three ", "four"]

FAULTS: dict[str, tuple[Script, str]] = {
    "stall": (Script(chunks=CHUNKS, stall_after=2, stall_seconds=3), "upstream_timeout"),
    "reset": (Script(chunks=CHUNKS, drop_connection_after=2), "upstream_unavailable"),
    "malformed": (Script(chunks=CHUNKS, malformed_after=2), "upstream_unavailable"),
    "error": (Script(chunks=CHUNKS, error_after_chunks=2), "upstream_unavailable"),
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[tuple[Live, FakeGemini, str]]:
    async with live_with_gemini(
        database_url,
        default_script=Script(chunks=["Title"]),
        gemini_first_chunk_timeout=1.0,
        gemini_chunk_timeout=1.0,
    ) as (live, fake):
        token, _ = await make_user_session("ModelFaults")
        yield live, fake, token


async def _chat(
    http: aiohttp.ClientSession, live: Live, token: str, **body: Any
) -> list[dict[str, Any]]:
    return await chat(http, live.url, token, **{"aiModel": MODEL, **body})


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_model_fault_mid_answer(env: tuple[Live, FakeGemini, str], fault: str) -> None:
    live, fake, token = env
    script, code = FAULTS[fault]
    async with aiohttp.ClientSession() as http:
        fake.enqueue(Script(chunks=["ready"]))
        first = await _chat(http, live, token, message="hello")
        conversation_id = first[0]["data"]["conversationId"]
        watcher = WsPeer(await http.ws_connect(live.url + "/api/ws", headers=bearer(token)))
        watcher.start()
        await watcher.send(type="subscribe", conversationId=conversation_id)
        await watcher.wait_for(lambda f: f["type"] == "subscribed")

        fake.enqueue(script)
        lines = await _chat(http, live, token, message=fault, conversationId=conversation_id)
        message_id = lines[0]["data"]["messageId"]
        sent = "".join(line["data"] for line in lines if line["topic"] == "token")
        assert sent == "one two ", lines
        assert lines[-1]["topic"] == "error", lines
        assert lines[-1]["data"]["code"] == code, lines[-1]
        assert "candidates" not in lines[-1]["data"]["error"]  # no raw upstream text

        seen = await watcher.wait_for(
            lambda f: f["type"] == "error" and f.get("messageId") == message_id
        )
        assert seen["code"] == code
        events = watcher.of(conversation_id)
        check_seq(events)
        assert token_text(events, message_id) == sent
        row = await Message.select().where(Message.id == message_id).first().run()
        assert row is not None and (row["status"], row["content"]) == ("error", sent)

        # The server serves afterwards: the next turn in the same conversation completes.
        fake.enqueue(Script(chunks=["fine ", "again"]))
        after = await _chat(http, live, token, message="again", conversationId=conversation_id)
        assert after[-1]["topic"] == "done", after[-1]
        assert after[-1]["data"]["fullText"] == "fine again"
        await watcher.wait_for(
            lambda f: f["type"] == "done" and f.get("messageId") == after[0]["data"]["messageId"]
        )
        await watcher.close()
