"""An import's attachments (docs/api.md, "Export and import"): the user's quota checked
for them, then each file decoded from the export's base64 a piece at a time into a
private spool file (hashed, its type decided from its content as for an upload, never
held whole in memory twice), checked against its ``sha256`` and given to the attachment
store.

:class:`ImportedFiles` remembers which stored files the import brought: when the import
fails after some were stored (a later file's check, the database refusing the rows, the
client gone), :meth:`ImportedFiles.discard` removes them again, unless a row names the
same bytes, so a refused import leaves no file behind (the periodic sweep would remove a
file no row names anyway, an hour later).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.storage import attachments
from server.storage.attachment_blobs import CHUNK_BYTES, BlobStore, spool
from server.storage.attachment_types import Sniffer, accepted, clean_name
from server.storage.importing import ImportTooLarge, InvalidImport, NewFile, StoredFile

#: Base64 characters decoded at a time (a whole number of 4-character groups).
PIECE_CHARS = CHUNK_BYTES // 3 * 4


@dataclass(frozen=True, slots=True)
class Quota:
    max_files: int
    max_bytes: int


async def check_quota(user_id: str, files: Sequence[NewFile], quota: Quota) -> None:
    """``413 quota_exceeded`` (:class:`ImportTooLarge`) naming the first attachment of the
    file that would take the user past ``CERO_ATTACHMENT_MAX_FILES`` or
    ``CERO_ATTACHMENT_QUOTA_BYTES``, counting what the user keeps already."""
    if not files:
        return
    count, used = await attachments.usage(user_id)
    for file in files:
        count += 1
        used += file.attachment.size
        if count > quota.max_files:
            raise ImportTooLarge(
                file.path,
                f"you would keep more than {quota.max_files} attachments "
                "(CERO_ATTACHMENT_MAX_FILES)",
                code="quota_exceeded",
                limit=quota.max_files,
            )
        if used > quota.max_bytes:
            raise ImportTooLarge(
                file.path,
                f"your attachments would take more than {quota.max_bytes} bytes "
                "(CERO_ATTACHMENT_QUOTA_BYTES)",
                code="quota_exceeded",
                limit=quota.max_bytes,
            )


@dataclass(frozen=True, slots=True)
class _Decoded:
    sha256: str
    size: int
    mime_type: str | None


def _decode(data: str, fd: int, name: str) -> _Decoded | None:
    """``data`` decoded into ``fd`` a piece at a time (``None``: not base64)."""
    digest = hashlib.sha256()
    sniffer = Sniffer()
    size = 0
    for start in range(0, len(data), PIECE_CHARS):
        try:
            piece = base64.b64decode(data[start : start + PIECE_CHARS], validate=True)
        except ValueError:  # binascii.Error, or a character that is not ASCII
            return None
        digest.update(piece)
        sniffer.feed(piece)
        os.write(fd, piece)
        size += len(piece)
    return _Decoded(digest.hexdigest(), size, sniffer.mime_type(name))


class ImportedFiles:
    """The files one import stores, by (conversation's index, attachment's id in the
    file): :attr:`stored`, what :func:`server.storage.importing.plan` links."""

    def __init__(self, blobs: BlobStore, types: Collection[str]) -> None:
        self.blobs = blobs
        self.types = types
        self.stored: dict[tuple[int, str], StoredFile] = {}
        #: Hashes whose bytes this import put in the store (none were kept before).
        self._brought: set[str] = set()

    async def store_all(self, files: Sequence[NewFile]) -> None:
        """Each file decoded, checked and stored, in the file's order; the first one that
        fails is :class:`InvalidImport` naming its path. The base64 text is released as
        soon as its file is stored."""
        for file in files:
            await self._store(file)
            file.attachment.data = None

    async def _store(self, file: NewFile) -> None:
        attachment = file.attachment
        assert attachment.data is not None  # checked: the first naming carries its bytes
        name = clean_name(attachment.name)
        fd, path = spool(self.blobs.spool_dir())
        try:
            try:
                decoded = await asyncio.to_thread(_decode, attachment.data, fd, name)
            finally:
                os.close(fd)
            if decoded is None:
                raise InvalidImport(f"{file.path}.data", "not valid base64")
            if decoded.size != attachment.size:
                raise InvalidImport(
                    f"{file.path}.size", f"does not match the data ({decoded.size} bytes)"
                )
            if decoded.sha256 != attachment.sha256:
                raise InvalidImport(f"{file.path}.sha256", "does not match the data")
            if not accepted(decoded.mime_type, self.types):
                what = decoded.mime_type or "neither a known format nor UTF-8 text"
                raise InvalidImport(
                    f"{file.path}.data",
                    f"the content is {what}, not an accepted type (CERO_ATTACHMENT_TYPES)",
                )
            assert decoded.mime_type is not None
            await self._put(decoded.sha256, path)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        self.stored[(file.conversation, attachment.id)] = StoredFile(
            decoded.sha256, decoded.size, decoded.mime_type, name
        )

    async def _put(self, sha256: str, path: Path) -> None:
        if sha256 in self._brought or await self.blobs.has(sha256):
            return
        self._brought.add(sha256)  # before the put: a put cut short is discarded too
        await self.blobs.put(sha256, path)

    async def discard(self) -> None:
        """Remove the files this import stored that no row names (after its rows were
        rolled back, or never written)."""
        brought, self._brought = self._brought, set()
        await attachments.drop_unreferenced(self.blobs, brought)
