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
