"""Uploads are streamed, never held whole: 20 users upload 20 MB each at once to
``cero-api serve``, and the server's RSS (read from ``/proc``, tests/process_stats.py)
stays far below what holding them would take during the uploads, and is back near where
it started afterwards. Logs the upload throughput and the RSS during it (set
``ATTACHMENT_MEMORY_REPORT`` to a path to keep the line)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest
import structlog

from server.storage import db
from tests.auth_helpers import bearer, make_user_session
from tests.process_stats import rss
from tests.server_process import serve

log = structlog.get_logger(__name__)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

USERS = 20
FILE_BYTES = 20_000_000
#: Holding the uploads would take 400 MB; streaming them takes a few read buffers each.
PEAK_BOUND = 96 << 20
#: Back near the start afterwards (allocator retention, the spool files' page cache is
#: not RSS).
AFTER_BOUND = 32 << 20


def _payload(n: int) -> bytes:
    """A 20 MB text file, different per user (each is stored: no two share a hash)."""
    line = f"user {n}: the quick brown fox jumps over the lazy dog\n".encode()
    return (line * (FILE_BYTES // len(line) + 1))[:FILE_BYTES]


async def _upload(http: aiohttp.ClientSession, url: str, token: str, data: bytes) -> int:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="big.txt", content_type="text/plain")
    async with http.post(url + "/api/attachments", data=form, headers=bearer(token)) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return int(body["attachment"]["size"])


async def test_twenty_users_upload_twenty_megabytes_at_once(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'cero.db'}"
    await db.migrate(db.bind(database_url))
    tokens = [(await make_user_session(f"Up{n}"))[0] for n in range(USERS)]
    payloads = [_payload(n) for n in range(USERS)]
    env = {"CERO_LOG_LEVEL": "warning", "CERO_MALLOC_TRIM_INTERVAL": "0.5"}
    async with (
        serve(database_url, cwd=tmp_path, env=env) as server,
        aiohttp.ClientSession() as http,
    ):
        await _upload(http, server.url, tokens[0], b"warm up\n")  # imports, pools, caches
        await asyncio.sleep(1.0)
        rss0 = rss(server.pid)
        peak = rss0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss(server.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.get_running_loop().create_task(sample())
        started = time.perf_counter()
        sizes = await asyncio.gather(
            *(_upload(http, server.url, t, p) for t, p in zip(tokens, payloads, strict=True))
        )
        elapsed = time.perf_counter() - started
        done.set()
        await sampler
        assert sizes == [FILE_BYTES] * USERS
        await asyncio.sleep(2.0)  # the allocator's trim (CERO_MALLOC_TRIM_INTERVAL)
        rss1 = rss(server.pid)
        folder = tmp_path / "attachments"
        assert len([n for n in os.listdir(folder) if len(n) == 64]) == USERS + 1  # + warm-up
        assert not [n for n in os.listdir(folder) if n.startswith(".upload-")]
        measured = (
            f"{USERS} uploads of {FILE_BYTES / 1e6:.0f} MB at once: "
            f"{USERS * FILE_BYTES / 2**20 / elapsed:.0f} MiB/s, rss {rss0 / 2**20:.1f} -> "
            f"peak {peak / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB"
        )
        log.info("attachment_upload_memory", measured=measured)
        report = os.environ.get("ATTACHMENT_MEMORY_REPORT")
        if report:
            Path(report).write_text(measured + "\n")
        assert peak - rss0 <= PEAK_BOUND, measured
        assert rss1 - rss0 <= AFTER_BOUND, measured


#: Attachments of the exported account (20 MB each: 160 MB, 213 MB of base64).
EXPORTED_FILES = 8
#: Holding the account's files would take 160 MB (their base64 213 MB more).
EXPORT_PEAK_BOUND = 64 << 20


async def test_an_account_export_streams_its_attachments(tmp_path: Path) -> None:
    """``GET /api/export`` of an account whose attachments take 160 MB: each file is read a
    store chunk at a time and written as base64 in pieces, so the server's RSS grows by
    far less than the files (the client reads the answer as it comes and checks its
    size)."""
    from server.storage import attachments
    from server.storage.tables import Message
    from tests.server.routes.test_export_import import store_tree

    database_url = f"sqlite:///{tmp_path / 'cero.db'}"
    await db.migrate(db.bind(database_url))
    token, user_id = await make_user_session("Exporter")
    env = {"CERO_LOG_LEVEL": "warning", "CERO_MALLOC_TRIM_INTERVAL": "0.5"}
    async with (
        serve(database_url, cwd=tmp_path, env=env) as server,
        aiohttp.ClientSession() as http,
    ):
        refs = []
        for n in range(EXPORTED_FILES):
            form = aiohttp.FormData()
            form.add_field("file", _payload(100 + n), filename=f"f{n}.txt")
            async with http.post(
                server.url + "/api/attachments", data=form, headers=bearer(token)
            ) as resp:
                body = await resp.json()
                assert resp.status == 201, body
                row = body["attachment"]
                refs.append(attachments.ref({**row, "mime_type": row["mimeType"]}))
        tree = {
            "title": "files",
            "messages": [{"role": "user", "parent": None, "content": "x", "status": "complete"}],
            "leaf": 0,
        }
        conversation_id = await store_tree(user_id, tree)
        (message,) = await Message.select(Message.id).where(
            Message.conversation_id == conversation_id
        )
        await attachments.link(str(message["id"]), conversation_id, refs)
        await asyncio.sleep(2.0)  # the uploads' memory trimmed
        rss0 = rss(server.pid)
        peak = rss0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss(server.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.get_running_loop().create_task(sample())
        received = 0
        async with http.get(server.url + "/api/export", headers=bearer(token)) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 20):
                received += len(chunk)
        done.set()
        await sampler
        base64_bytes = EXPORTED_FILES * (FILE_BYTES + 2) // 3 * 4
        assert base64_bytes < received < base64_bytes + 64 * 1024
        measured = (
            f"export of {EXPORTED_FILES} attachments of {FILE_BYTES / 1e6:.0f} MB: "
            f"{received / 2**20:.0f} MiB, rss {rss0 / 2**20:.1f} -> peak {peak / 2**20:.1f} MiB"
        )
        log.info("attachment_export_memory", measured=measured)
        assert peak - rss0 <= EXPORT_PEAK_BOUND, measured
