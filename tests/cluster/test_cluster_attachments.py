"""Attachments in cluster mode (docs/api.md, Attachments): two ``cero-api serve``
processes on one PostgreSQL database and one Redis. A file uploaded through process A is
kept in the database store (``attachment_chunk``), so process B serves it, sends it to
the Gemini stand-in as a part, and a send through A into the conversation B owns carries
it too (forwarded with the command); deleting the conversation through A removes it for
both."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image

from server.storage import db
from server.storage.tables import Attachment, AttachmentChunk
from standins.gemini import FakeGemini, Script
from tests import cluster_harness
from tests.auth_helpers import bearer, make_user_session
from tests.cluster_harness import Cluster
from tests.live_clients import chat_result
from tests.server_process import ServerProcess

pg_url = cluster_harness.pg_url  # the module's PostgreSQL database (a fixture)
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.postgres]

GEMINI = "gemini-2.5-flash-lite"


@pytest_asyncio.fixture(loop_scope="module")
async def two(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[list[ServerProcess], FakeGemini]]:
    fake = FakeGemini()
    url = await fake.start()
    running = Cluster(
        pg_url,
        tmp_path,
        {"GEMINI_API_KEY": "test-key", "CERO_GEMINI_BASE_URL": url, "CERO_DEMO_TOKEN_DELAY": "0"},
    )
    try:
        yield await running.start_many(2), fake
    finally:
        await running.stop()
        await fake.stop()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


async def test_upload_through_a_send_through_b(
    two: tuple[list[ServerProcess], FakeGemini], pg_url: str
) -> None:
    (a, b), fake = two
    db.bind(pg_url)
    token, _ = await make_user_session("Clustered")
    image = _png()
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="red.png", content_type="image/png")
        async with http.post(a.url + "/api/attachments", data=form, headers=bearer(token)) as r:
            assert r.status == 201, await r.text()
            attachment: dict[str, Any] = (await r.json())["attachment"]
        assert await AttachmentChunk.count().where(AttachmentChunk.sha256 == attachment["sha256"])
        # B serves what A stored.
        async with http.get(
            b.url + f"/api/attachments/{attachment['id']}", headers=bearer(token)
        ) as r:
            assert r.status == 200 and await r.read() == image
        async with http.get(
            b.url + f"/api/attachments/{attachment['id']}/thumbnail", headers=bearer(token)
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        # B sends it to Gemini.
        fake.enqueue(Script(chunks=["a red square"]))
        status, lines = await chat_result(
            http,
            b.url,
            token,
            message="what is it?",
            aiModel=GEMINI,
            attachments=[attachment["id"]],
        )
        assert status == 200 and lines[-1]["topic"] == "done", lines
        conversation_id = lines[0]["data"]["conversationId"]
        received = fake.files.received(fake.stream_requests()[-1].body)
        assert [(p.mime_type, p.data) for p in received] == [("image/png", image)]
        # A send through A (the conversation's owner may be B) still carries it.
        fake.enqueue(Script(chunks=["still red"]))
        status, lines = await chat_result(
            http, a.url, token, message="and now?", aiModel=GEMINI, conversationId=conversation_id
        )
        assert status == 200 and lines[-1]["topic"] == "done", lines
        received = fake.files.received(fake.stream_requests()[-1].body)
        assert [(p.mime_type, p.data) for p in received] == [("image/png", image)]
        async with http.get(
            a.url + f"/api/conversations/{conversation_id}/messages", headers=bearer(token)
        ) as r:
            messages = (await r.json())["messages"]
        assert messages[0]["attachments"][0]["id"] == attachment["id"]
        # Deleted with its conversation, for both processes.
        async with http.delete(
            a.url + f"/api/conversations/{conversation_id}", headers=bearer(token)
        ) as r:
            assert r.status == 200
        async with http.get(
            b.url + f"/api/attachments/{attachment['id']}", headers=bearer(token)
        ) as r:
            assert r.status == 404
    assert await Attachment.count().where(Attachment.id == attachment["id"]) == 0
    assert await AttachmentChunk.count().where(AttachmentChunk.sha256 == attachment["sha256"]) == 0
