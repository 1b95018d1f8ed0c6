"""Export: a user's conversations, every branch, as the versioned JSON file or as Markdown.

The JSON file (docs/api.md, "Export and import") is ``{"format": "cero-export", "version":
2, "exportedAt", "conversations": [...]}``; each conversation carries every message of
every branch (``parentId`` links) and its ``activeLeafId``, and each user message its
attachments (metadata, and the bytes in base64 the first time the conversation names
one). :func:`export_chunks` yields it piece by piece: the account is read a page of
conversations at a time (keyset on the creation time and id, which never change, so a
conversation renamed or answered while the export runs is neither skipped nor repeated),
each conversation is rendered as soon as its messages are read, and an attachment's bytes
are read from the store a chunk at a time and written as base64 in pieces, so neither an
account nor one of its files is ever held in memory whole. A ``streaming`` answer is
exported as stored (its flushed text, status ``streaming``). An attachment whose bytes
are gone from the store is left out (logged): the file stays importable.

Markdown is for reading: the title, then the active path as ``**You**`` /
``**Assistant (model)**`` blocks (a message's attachments listed by name, type and size);
the other branches are only counted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog

from actors.api import ConversationTree, StoredMessage
from actors.clock import as_utc, iso
from server.storage.attachment_blobs import BlobStore
from server.storage.attachments import rows_of_messages
from server.storage.chat_store import to_stored
from server.storage.tables import Conversation, Message

log = structlog.get_logger(__name__)

FORMAT = "cero-export"
VERSION = 2
#: Conversations read per query of an account export.
PAGE = 50
#: Pieces of the JSON are gathered up to this size before they are yielded.
FLUSH_BYTES = 64 << 10

Format = Literal["json", "markdown"]


def message_export(message: StoredMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": message.id,
        "parentId": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "createdAt": iso(message.created_at),
    }
    if message.role == "assistant":
        if message.model:
            out["aiModel"] = message.model
        if message.finish_reason:
            out["finishReason"] = message.finish_reason
        if message.usage is not None:
            out["usage"] = message.usage
        if message.citations is not None:
            out["citations"] = message.citations
        if message.tools is not None:
            out["tools"] = message.tools
    return out


@dataclass(slots=True)
class Read:
    """One conversation as read for its export: its tree, and each user message's
    attachment rows (``id, name, mime_type, size, sha256``) in order."""

    tree: ConversationTree
    attached: dict[str, list[dict[str, Any]]]


async def _read(conversation: dict[str, Any]) -> Read:
    rows = await (
        Message.select()
        .where(Message.conversation_id == conversation["id"])
        .order_by(Message.created_at)
        .output(load_json=True)
        .run()
    )
    tree = ConversationTree([to_stored(row) for row in rows], conversation.get("active_leaf_id"))
    attached = await rows_of_messages(str(r["id"]) for r in rows if r["role"] == "user")
    return Read(tree, attached)


def conversation_head(conversation: dict[str, Any], tree: ConversationTree) -> bytes:
    """The conversation's JSON up to its first message: ``{…,"messages":[``."""
    head = orjson.dumps(
        {
            "id": conversation["id"],
            "shortTitle": conversation["short_title"],
            "createdAt": iso(conversation["created_at"]),
            "updatedAt": iso(conversation["updated_at"]),
            "activeLeafId": tree.leaf,
            "messages": [],
        }
    )
    return head[:-2]


def attachment_meta(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "mimeType": row["mime_type"],
        "size": int(row["size"]),
        "sha256": row["sha256"],
    }


async def _base64(blobs: BlobStore, sha256: str) -> AsyncIterator[bytes]:
    """The stored bytes as base64, a piece per chunk read (whole 3-byte groups; the rest
    carried to the next piece); ``FileNotFoundError`` before the first piece when gone."""
    carry = b""
    async for chunk in blobs.read(sha256):
        data = carry + chunk
        whole = len(data) - len(data) % 3
        carry = data[whole:]
        if whole:
            yield base64.b64encode(data[:whole])
    if carry:
        yield base64.b64encode(carry)


async def _conversation_json(
    conversation: dict[str, Any], read: Read, blobs: BlobStore | None
) -> AsyncIterator[bytes]:
    """One conversation of the JSON file, in pieces: every message, oldest first, each
    user message with its attachments (the bytes the first time the conversation names
    one; an attachment whose bytes are gone is left out)."""
    yield conversation_head(conversation, read.tree)
    written: set[str] = set()
    for index, message in enumerate(read.tree.all()):
        body = orjson.dumps(message_export(message))
        if index:
            body = b"," + body
        rows = read.attached.get(message.id)
        if not rows or blobs is None:
            yield body
            continue
        yield body[:-1] + b',"attachments":['
        first = True
        for row in rows:
            meta = attachment_meta(row)
            if meta["id"] in written:
                yield (b"" if first else b",") + orjson.dumps(meta)
                first = False
                continue
            pieces = _base64(blobs, meta["sha256"])
            try:
                opening = await anext(pieces)
            except (FileNotFoundError, StopAsyncIteration):
                log.warning("export_attachment_missing", attachment_id=meta["id"])
                continue
            yield (b"" if first else b",") + orjson.dumps(meta)[:-1] + b',"data":"' + opening
            first = False
            async for piece in pieces:
                yield piece
            yield b'"}'
            written.add(meta["id"])
        yield b"]}"
    yield b"]}"


_STATUS_NOTE = {
    "streaming": "still being written when exported",
    "cancelled": "cancelled",
    "error": "failed",
    "interrupted": "interrupted",
}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def _escape(text: str) -> str:
    """A file name as literal Markdown text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _attachment_line(row: dict[str, Any]) -> str:
    name = _escape(str(row["name"]))
    return f"- *Attached:* {name} ({row['mime_type']}, {int(row['size'])} bytes)"


def conversation_markdown(
    conversation: dict[str, Any],
    tree: ConversationTree,
    attached: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """The title, the active path (each message's attachments listed by name, type and
    size: no bytes), and a line counting what the other branches hold."""
    attached = attached or {}
    title = str(conversation["short_title"]) or "Untitled conversation"
    lines = [
        f"# {title}",
        "",
        f"*Conversation `{conversation['id']}`, created {iso(conversation['created_at'])}, "
        f"updated {iso(conversation['updated_at'])}.*",
        "",
    ]
    path = tree.path()
    for message in path:
        if message.role == "user":
            who = "**You**"
        else:
            who = f"**Assistant ({message.model})**" if message.model else "**Assistant**"
        siblings = tree.siblings(message.id)
        if len(siblings) > 1:
            who += f" · version {siblings.index(message.id) + 1} of {len(siblings)}"
        lines += [who, "", message.content if message.content else "*(no text)*", ""]
        files = attached.get(message.id, [])
        if files:
            lines += [*(_attachment_line(f) for f in files), ""]
        note = _STATUS_NOTE.get(message.status)
        if note is not None:
            lines += [f"*({note})*", ""]
    elsewhere = len(tree) - len(path)
    if elsewhere:
        plural = "message" if elsewhere == 1 else "messages"
        lines += [
            f"*Other branches hold {elsewhere} more {plural}, not shown here; "
            "the JSON export has every branch.*",
            "",
        ]
    return "\n".join(lines)


async def _render(
    conversation: dict[str, Any], read: Read, fmt: Format, blobs: BlobStore | None
) -> AsyncIterator[bytes]:
    if fmt == "json":
        async for piece in _conversation_json(conversation, read, blobs):
            yield piece
        return
    yield conversation_markdown(conversation, read.tree, read.attached).encode()


async def account_conversations(user_id: str) -> AsyncIterator[list[dict[str, Any]]]:
    """The user's conversations, oldest first, a page at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        query = Conversation.select().where(Conversation.user_id == user_id)
        if after is not None:
            stamp, last_id = after
            query = query.where(
                (Conversation.created_at > stamp)
                | ((Conversation.created_at == stamp) & (Conversation.id > last_id))
            )
        rows = await query.order_by(Conversation.created_at, Conversation.id).limit(PAGE).run()
        if not rows:
            return
        yield rows
        if len(rows) < PAGE:
            return
        after = (as_utc(rows[-1]["created_at"]), str(rows[-1]["id"]))


def _head(fmt: Format, exported_at: datetime, account: bool) -> bytes:
    if fmt == "json":
        head = orjson.dumps({"format": FORMAT, "version": VERSION, "exportedAt": iso(exported_at)})
        return head[:-1] + b',"conversations":['
    if not account:
        return b""
    return f"*Cero export of {iso(exported_at)}.*\n\n".encode()


def _separator(fmt: Format) -> bytes:
    return b"," if fmt == "json" else b"\n---\n\n"


async def export_chunks(
    conversations: AsyncIterator[list[dict[str, Any]]],
    fmt: Format,
    exported_at: datetime,
    *,
    account: bool,
    blobs: BlobStore | None = None,
) -> AsyncGenerator[bytes, None]:
    """The export of ``conversations`` (pages of conversation rows), in chunks of about
    :data:`FLUSH_BYTES` (an attachment's base64 a piece per chunk the store reads): the
    file's head comes with the first conversation (or alone, when there is none).
    ``blobs``: where attachments' bytes are read (``None``: attachments left out)."""
    pending = bytearray(_head(fmt, exported_at, account))
    first = True
    async for page in conversations:
        for conversation in page:
            read = await _read(conversation)
            if not first:
                pending += _separator(fmt)
            first = False
            async for piece in _render(conversation, read, fmt, blobs):
                pending += piece
                if len(pending) >= FLUSH_BYTES:
                    yield bytes(pending)
                    pending.clear()
            if pending:
                yield bytes(pending)
                pending.clear()
    tail = b"]}\n" if fmt == "json" else b""
    if first and fmt == "markdown":
        tail = b"*No conversations.*\n"
    yield bytes(pending) + tail


async def one_conversation(row: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
    """One conversation as the pages :func:`export_chunks` reads."""
    yield [row]


def filename(fmt: Format, exported_at: datetime, conversation_id: str | None) -> str:
    extension = "json" if fmt == "json" else "md"
    if conversation_id is not None:
        return f"cero-conversation-{conversation_id}.{extension}"
    return f"cero-export-{as_utc(exported_at).strftime('%Y%m%dT%H%M%SZ')}.{extension}"
