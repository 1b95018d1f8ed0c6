"""``cero chat --attach FILE``: files uploaded before the message that names them.

Each file is checked first (it exists, is a regular file, can be opened): one that cannot
be read is a usage error before anything is uploaded. Then each is uploaded in turn
(``POST /api/attachments``, ``multipart/form-data``, the part named ``file``), streamed
from disk by aiohttp's file payload in 64 KiB reads, never read whole into memory; a file
of :data:`PROGRESS_FROM` bytes or more draws a progress line on stderr when stderr is a
terminal. A refused upload (too large, over the quota, a type the server does not take)
is one line naming the file and the server's limit, and the message is not sent (files
already uploaded for it are never sent; the server deletes unsent attachments after a
day). The ids go in the send's ``attachments`` (docs/api.md, Attachments).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from client.api import Api, error_text
from client.context import Context
from client.errors import CliError, Exit
from client.friendly import network_reason
from client.output import Output
from client.terminal_text import clean

#: The server takes at most this many attachments in one send.
MAX_FILES = 10
#: Files this large or larger show a progress line (on a terminal).
PROGRESS_FROM = 1 << 20
#: An upload: no total (a large file on a slow link), but the server must answer within
#: this of the last byte it got (its own body timeout is 300 s).
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=330)
PATH = "/api/attachments"


@dataclass(frozen=True)
class LocalFile:
    """A file named by ``--attach``, checked readable."""

    path: Path
    size: int

    @property
    def name(self) -> str:
        return self.path.name


def check_files(paths: Sequence[str]) -> list[LocalFile]:
    """The ``--attach`` files, each a readable regular file; else a usage error naming it."""
    if len(paths) > MAX_FILES:
        raise CliError(
            f"at most {MAX_FILES} files with --attach (one message takes {MAX_FILES})",
            Exit.USAGE,
        )
    files: list[LocalFile] = []
    for given in paths:
        path = Path(given).expanduser()
        try:
            with path.open("rb") as f:
                info = os.fstat(f.fileno())
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CliError(f"cannot attach {given}: {reason}", Exit.USAGE) from None
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"cannot attach {given}: not a regular file", Exit.USAGE)
        if info.st_size == 0:
            raise CliError(f"cannot attach {given}: the file is empty", Exit.USAGE)
        files.append(LocalFile(path, info.st_size))
    return files


class CountingReader(io.BufferedReader):
    """A file read by aiohttp's file payload (in its executor), counting the bytes read so
    far for the progress line; aiohttp still sees a ``BufferedReader`` (Content-Length from
    ``fstat``, 64 KiB reads)."""

    sent = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.sent += len(chunk)
        return chunk


async def upload_all(ctx: Context, files: Sequence[LocalFile]) -> list[str]:
    """Upload ``files`` in order; their ids. The first refusal raises (one line)."""
    ids: list[str] = []
    async with ctx.signed_in() as api:
        for local in files:
            attachment = await upload(api, ctx.out, local)
            ids.append(str(attachment["id"]))
    return ids


async def upload(api: Api, out: Output, local: LocalFile) -> dict[str, Any]:
    """``POST /api/attachments`` with ``local`` streamed from disk; the ``attachment``."""
    try:
        reader = CountingReader(io.FileIO(local.path, "rb"))
    except OSError as exc:  # gone since it was checked
        raise CliError(f"cannot attach {local.path}: {exc.strerror}", Exit.USAGE) from None
    form = aiohttp.FormData()
    form.add_field("file", reader, filename=local.name, content_type="application/octet-stream")
    progress = None
    if out.err_tty and local.size >= PROGRESS_FROM:
        progress = asyncio.get_running_loop().create_task(_progress(out, local, reader))
    try:
        async with api.session.post(
            api.server + PATH, data=form, headers=api.headers(), timeout=UPLOAD_TIMEOUT
        ) as resp:
            body = await resp.read()
    except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
        raise CliError(
            f"uploading {local.name} to {api.server} failed: {network_reason(exc)}",
            Exit.UNREACHABLE,
        ) from None
    finally:
        reader.close()
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
    if resp.status != 201:
        if resp.status == 401:
            raise api.refused(resp.status, body)
        raise CliError(refusal(local, resp.status, body), reason=error_text(resp.status, body)[1])
    attachment = _attachment(body)
    if attachment is None:
        raise CliError(f"the server at {api.server} answered the upload of {local.name} oddly")
    return attachment


def _attachment(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = data.get("attachment") if isinstance(data, dict) else None
    return found if isinstance(found, dict) and found.get("id") else None


def refusal(local: LocalFile, status: int, body: bytes) -> str:
    """One line for a refused upload: the file, what was refused, the server's limit."""
    text, code = error_text(status, body)
    text = text.removeprefix("file: ")
    limit = _limit(body)
    if code == "payload_too_large" and limit is not None:
        return (
            f"cannot attach {local.path}: {size_text(local.size)} is over the server's "
            f"limit of {size_text(limit)} per file (payload_too_large)"
        )
    suffix = f" ({code})" if code and code not in text else ""
    return f"cannot attach {local.path}: {text}{suffix}"


def _limit(body: bytes) -> int | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    limit = data.get("limit") if isinstance(data, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def size_text(size: int) -> str:
    """``1536`` → ``1.5 KiB (1536 bytes)``; bytes alone under a KiB."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    return f"{value:.1f} GiB ({size} bytes)"


async def _progress(out: Output, local: LocalFile, reader: CountingReader) -> None:
    """``uploading chart.png  3.2 of 20.0 MiB  16%  4.1 MiB/s`` on stderr, redrawn."""
    started = time.monotonic()
    total, name = local.size / 2**20, clean(local.name)
    try:
        while True:
            done = min(reader.sent, local.size)
            elapsed = max(time.monotonic() - started, 1e-3)
            out.err.write(
                f"\r\x1b[Kuploading {name}  {done / 2**20:.1f} of {total:.1f} MiB  "
                f"{100 * done // local.size}%  {done / 2**20 / elapsed:.1f} MiB/s"
            )
            out.err.flush()
            await asyncio.sleep(0.2)
    finally:
        out.err.write("\r\x1b[K")
        out.err.flush()
