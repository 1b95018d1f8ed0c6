"""Attachments' rows (docs/api.md, Attachments): who owns one, the conversation it was
sent in, the messages that carry it; and the sweep that removes what nothing needs.

- An attachment is its uploader's. Sent in a conversation, it belongs to it from then on
  (``conversation_id``): deleted with it, and refused in another one.
- Its bytes (:mod:`server.storage.attachment_blobs`) are removed once no row names their
  hash: at once after a conversation's delete, and by the periodic sweep, which also
  removes attachments never sent within ``CERO_ATTACHMENT_UNSENT_HOURS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from actors.api import Attachment as AttachmentRef
from actors.clock import iso, utcnow
from server.core.app_keys import SETTINGS
from server.core.ids import new_id
from server.storage.attachment_blobs import BlobStore, make_blobs, read_all
from server.storage.tables import Attachment, Message, MessageAttachment

log = structlog.get_logger(__name__)

#: The app's attachment store (made where the app starts: :func:`attachment_store`).
BLOBS: web.AppKey[BlobStore] = web.AppKey("attachment_blobs")

#: Seconds between sweeps.
SWEEP_INTERVAL_S = 600.0
#: A stored file younger than this is never swept (its upload may be writing its row).
FRESH_FILE_S = 3600.0


class AttachmentRefused(Exception):
    """A send names an attachment it may not carry (``field``: ``attachments``)."""


def ref(row: dict[str, Any]) -> AttachmentRef:
    return AttachmentRef(
        id=str(row["id"]), name=row["name"], mime_type=row["mime_type"], size=int(row["size"])
    )


def attachment_json(row: dict[str, Any]) -> dict[str, object]:
    """The upload's answer: ``{id, name, mimeType, size, sha256, createdAt}``."""
    return {**ref(row).as_json(), "sha256": row["sha256"], "createdAt": iso(row["created_at"])}


async def usage(user_id: str) -> tuple[int, int]:
    """The user's attachments: ``(how many, their bytes)``."""
    rows = await Attachment.raw(
        "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM attachment WHERE user_id = {}",
        user_id,
    ).run()
    row = rows[0] if rows else {"n": 0, "bytes": 0}
    return int(row["n"]), int(row["bytes"])


async def create(user_id: str, name: str, mime_type: str, size: int, sha256: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id(),
        "created_at": utcnow(),
        "user_id": user_id,
        "conversation_id": None,
        "name": name,
        "mime_type": mime_type,
        "size": size,
        "sha256": sha256,
    }
    await Attachment.insert(
        Attachment(
            id=row["id"],
            created_at=row["created_at"],
            user_id=user_id,
            name=name,
            mime_type=mime_type,
            size=size,
            sha256=sha256,
        )
    ).run()
    return row


async def owned(attachment_id: str, user_id: str) -> dict[str, Any] | None:
    """The attachment, if it is this user's (``None`` for another's: a ``404`` alike)."""
    row: dict[str, Any] | None = (
        await Attachment.select()
        .where((Attachment.id == attachment_id) & (Attachment.user_id == user_id))
        .first()
        .run()
    )
    return row


async def for_send(
    user_id: str, conversation_id: str | None, ids: Sequence[str]
) -> tuple[AttachmentRef, ...]:
    """The attachments a send names, in its order: each the sender's, and not sent in
    another conversation; else :class:`AttachmentRefused`."""
    if not ids:
        return ()
    if len(set(ids)) != len(ids):
        raise AttachmentRefused("attachments: an attachment is named twice")
    rows = await Attachment.select().where(
        (Attachment.id.is_in(list(ids))) & (Attachment.user_id == user_id)
    )
    found = {str(r["id"]): r for r in rows}
    out = []
    for attachment_id in ids:
        row = found.get(attachment_id)
        if row is None:
            raise AttachmentRefused(f"attachments: no attachment {attachment_id[:64]!r}")
        owner = row["conversation_id"]
        if owner is not None and owner != conversation_id:
            raise AttachmentRefused(
                f"attachments: {attachment_id!r} was sent in another conversation"
            )
        out.append(ref(row))
    return tuple(out)


async def link(message_id: str, conversation_id: str, attachments: Sequence[AttachmentRef]) -> None:
    """Record a user message's attachments (in order), and that they belong to its
    conversation from now on."""
    if not attachments:
        return
    ids = [a.id for a in attachments]
    async with Attachment._meta.db.transaction():
        await (
            Attachment.update({Attachment.conversation_id: conversation_id})
            .where(Attachment.id.is_in(ids) & Attachment.conversation_id.is_null())
            .run()
        )
        now = utcnow()
        await MessageAttachment.insert(
            *(
                MessageAttachment(
                    id=new_id(), created_at=now, message_id=message_id, attachment_id=a, position=i
                )
                for i, a in enumerate(ids)
            )
        ).run()


async def rows_of_messages(message_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """message id → its attachments' rows in order (only messages that have some)."""
    ids = list(message_ids)
    if not ids:
        return {}
    rows = await (
        MessageAttachment.select(
            MessageAttachment.message_id,
            MessageAttachment.position,
            *MessageAttachment.attachment_id.all_columns(),
        )
        .where(MessageAttachment.message_id.is_in(ids))
        .order_by(MessageAttachment.position)
        .output(nested=True)
        .run()
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["message_id"]), []).append(row["attachment_id"])
    return out


async def of_messages(message_ids: Iterable[str]) -> dict[str, tuple[AttachmentRef, ...]]:
    """message id → its attachments in order (only messages that have some)."""
    rows = await rows_of_messages(message_ids)
    return {k: tuple(ref(row) for row in v) for k, v in rows.items()}


async def of_message_in(conversation_id: str, message_id: str) -> tuple[AttachmentRef, ...]:
    """A message's attachments, in order, if it is a message of this conversation (else
    none: an edit of a message elsewhere is refused by the actor)."""
    found = await Message.exists().where(
        (Message.id == message_id) & (Message.conversation_id == conversation_id)
    )
    if not found:
        return ()
    return (await of_messages([message_id])).get(message_id, ())


async def of_conversation(conversation_id: str) -> dict[str, tuple[AttachmentRef, ...]]:
    """message id → its attachments, for every message of the conversation."""
    rows = await Message.select(Message.id).where(
        (Message.conversation_id == conversation_id) & (Message.role == "user")
    )
    return await of_messages(str(r["id"]) for r in rows)


async def data_of(blobs: BlobStore, attachment_ids: Sequence[str]) -> dict[str, bytes]:
    """attachment id → its bytes (attachments or files gone are left out)."""
    if not attachment_ids:
        return {}
    rows = await Attachment.select(Attachment.id, Attachment.sha256).where(
        Attachment.id.is_in(list(attachment_ids))
    )
    out: dict[str, bytes] = {}
    for row in rows:
        try:
            out[str(row["id"])] = await read_all(blobs, str(row["sha256"]))
        except FileNotFoundError:
            log.warning("attachment_bytes_missing", attachment_id=row["id"])
    return out


async def hashes_of_conversation(conversation_id: str) -> set[str]:
    rows = await Attachment.select(Attachment.sha256).where(
        Attachment.conversation_id == conversation_id
    )
    return {str(r["sha256"]) for r in rows}


async def drop_unreferenced(blobs: BlobStore, hashes: Iterable[str]) -> int:
    """Remove the bytes of these hashes that no attachment row names any more."""
    wanted = set(hashes)
    if not wanted:
        return 0
    rows = await Attachment.select(Attachment.sha256).where(Attachment.sha256.is_in(list(wanted)))
    gone = wanted - {str(r["sha256"]) for r in rows}
    for sha256 in gone:
        await blobs.delete(sha256)
    return len(gone)


async def sweep(blobs: BlobStore, unsent_hours: float) -> tuple[int, int]:
    """Remove attachments never sent within ``unsent_hours``, then every stored file no
    row names (a user's or a conversation's cascade delete, an upload that lost a race).
    Returns ``(attachments removed, files removed)``."""
    cutoff = utcnow() - timedelta(hours=unsent_hours)
    stale = await Attachment.select(Attachment.id).where(
        Attachment.conversation_id.is_null() & (Attachment.created_at < cutoff)
    )
    if stale:
        await Attachment.delete().where(Attachment.id.is_in([str(r["id"]) for r in stale])).run()
    stored = await blobs.stored(FRESH_FILE_S)
    files = await drop_unreferenced(blobs, stored) if stored else 0
    return len(stale), files


async def attachment_store(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the app's :data:`BLOBS`, and the periodic :func:`sweep`."""
    settings = app[SETTINGS]
    blobs = app[BLOBS] = make_blobs(settings)

    async def sweeping() -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                removed = await sweep(blobs, settings.attachment_unsent_hours)
            except Exception as exc:  # the database is down: the next round retries
                log.warning("attachment_sweep_failed", error=repr(exc)[:200])
                continue
            if any(removed):
                log.info("attachments_swept", attachments=removed[0], files=removed[1])

    task = asyncio.get_running_loop().create_task(sweeping(), name="attachment_sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
