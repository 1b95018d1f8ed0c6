"""Where attachments' bytes are kept, behind one interface (:class:`BlobStore`), keyed by
their SHA-256 (the same file uploaded twice is kept once; no name from a client is ever a
path).

- :class:`FileBlobs` (the embedded default): one file per hash in a folder under the data
  folder (``CERO_ATTACHMENT_DIR``), mode ``0600``, the folder ``0700``.
- :class:`DatabaseBlobs` (cluster mode): ``attachment_chunk`` rows in PostgreSQL, at most
  :data:`CHUNK_BYTES` each, so every process reads what another stored.

An upload is first written to a private temporary file (:func:`spool`) and only then
given to the store under its hash: an upload cut short leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import structlog

from actors.clock import utcnow
from server.core.config import Settings
from server.core.ids import new_id
from server.storage.tables import AttachmentChunk

log = structlog.get_logger(__name__)

#: One ``attachment_chunk`` row, and the unit files are read and streamed in.
CHUNK_BYTES = 1 << 20

FILE_MODE = 0o600
DIR_MODE = 0o700


class BlobStore(Protocol):
    async def put(self, sha256: str, source: Path) -> None:
        """Keep ``source``'s bytes under ``sha256`` (a no-op when already kept); ``source``
        is left for the caller to remove."""
        ...

    def read(self, sha256: str) -> AsyncIterator[bytes]:
        """The bytes, chunk by chunk; ``FileNotFoundError`` when not kept."""
        ...

    async def delete(self, sha256: str) -> None: ...

    async def has(self, sha256: str) -> bool:
        """Whether bytes are kept under ``sha256``."""
        ...

    async def stored(self, older_than: float) -> set[str]:
        """Every hash kept for at least ``older_than`` seconds (the sweep of files no row
        names leaves alone an upload whose row is being written)."""
        ...

    def spool_dir(self) -> Path | None:
        """Where uploads are spooled (the store's own folder, so keeping one is a rename),
        ``None``: the system's temporary folder."""
        ...


async def read_all(store: BlobStore, sha256: str) -> bytes:
    """The whole file (for the model request, which sends it whole anyway)."""
    out = bytearray()
    async for chunk in store.read(sha256):
        out += chunk
    return bytes(out)


def _valid(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


class FileBlobs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            folder.chmod(DIR_MODE)

    def _path(self, sha256: str) -> Path:
        return self.folder / _valid(sha256)

    def spool_dir(self) -> Path | None:
        return self.folder

    async def put(self, sha256: str, source: Path) -> None:
        target = self._path(sha256)
        if target.exists():
            return
        # A hard link, not a rename: the caller removes its spool file either way.
        try:
            await asyncio.to_thread(os.link, source, target)
        except FileExistsError:
            return  # the same bytes, stored by a concurrent upload
        except OSError:
            await asyncio.to_thread(_copy_private, source, target)
        with contextlib.suppress(OSError):
            target.chmod(FILE_MODE)

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self._path(sha256), "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(sha256).unlink)

    async def has(self, sha256: str) -> bool:
        return await asyncio.to_thread(self._path(sha256).exists)

    async def stored(self, older_than: float) -> set[str]:
        return await asyncio.to_thread(self._stored, time.time() - older_than)

    def _stored(self, before: float) -> set[str]:
        out = set()
        for entry in os.scandir(self.folder):
            if len(entry.name) != 64 or entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < before:
                    out.add(entry.name)
        return out


def _copy_private(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{new_id()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(CHUNK_BYTES):
                out.write(chunk)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


class DatabaseBlobs:
    """``attachment_chunk`` rows (PostgreSQL): written in one transaction per file, and
    only once per hash (the unique ``(sha256, seq)`` index; a concurrent writer of the
    same file loses quietly)."""

    def spool_dir(self) -> Path | None:
        return None

    async def put(self, sha256: str, source: Path) -> None:
        _valid(sha256)
        if await AttachmentChunk.exists().where(AttachmentChunk.sha256 == sha256).run():
            return
        engine = AttachmentChunk._meta.db
        handle = await asyncio.to_thread(source.open, "rb")
        try:
            async with engine.transaction():
                seq = 0
                while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                    await self._insert(sha256, seq, chunk)
                    seq += 1
        finally:
            handle.close()

    @staticmethod
    async def _insert(sha256: str, seq: int, chunk: bytes) -> None:
        await AttachmentChunk.raw(
            "INSERT INTO attachment_chunk (id, created_at, sha256, seq, data) "
            "VALUES ({}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            new_id(),
            utcnow(),
            sha256,
            seq,
            chunk,
        ).run()

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        _valid(sha256)
        seq = 0
        while True:
            row = (
                await AttachmentChunk.select(AttachmentChunk.data)
                .where((AttachmentChunk.sha256 == sha256) & (AttachmentChunk.seq == seq))
                .first()
                .run()
            )
            if row is None:
                if seq == 0:
                    raise FileNotFoundError(sha256)
                return
            yield bytes(row["data"])
            seq += 1

    async def delete(self, sha256: str) -> None:
        await AttachmentChunk.delete().where(AttachmentChunk.sha256 == sha256).run()

    async def has(self, sha256: str) -> bool:
        _valid(sha256)
        found: bool = await AttachmentChunk.exists().where(AttachmentChunk.sha256 == sha256).run()
        return found

    async def stored(self, older_than: float) -> set[str]:
        before = utcnow() - timedelta(seconds=older_than)
        rows = await AttachmentChunk.select(AttachmentChunk.sha256).where(
            (AttachmentChunk.seq == 0) & (AttachmentChunk.created_at < before)
        )
        return {str(r["sha256"]) for r in rows}


def make_blobs(settings: Settings) -> BlobStore:
    if settings.attachment_backend == "database":
        return DatabaseBlobs()
    return FileBlobs(settings.attachment_dir)


def spool(folder: Path | None) -> tuple[int, Path]:
    """A new private temporary file for an upload: ``(fd, path)``."""
    if folder is not None:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload-", dir=folder)
    os.fchmod(fd, FILE_MODE)
    return fd, Path(name)
