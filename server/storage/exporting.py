"""Export: a user's conversations, every branch, as the versioned JSON file or as Markdown.

The JSON file (docs/api.md, "Export and import") is ``{"format": "cero-export", "version":
1, "exportedAt", "conversations": [...]}``; each conversation carries every message of
every branch (``parentId`` links) and its ``activeLeafId``. :func:`export_chunks` yields
it piece by piece: the account is read a page of conversations at a time (keyset on the
creation time and id, which never change, so a conversation renamed or answered while the
export runs is neither skipped nor repeated) and each conversation is rendered as soon as
its messages are read, so an account is never held in memory whole. A ``streaming``
answer is exported as stored (its flushed text, status ``streaming``).

Markdown is for reading: the title, then the active path as ``**You**`` /
``**Assistant (model)**`` blocks; the other branches are only counted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Any, Literal

import orjson

from actors.api import ConversationTree, StoredMessage
from actors.clock import as_utc, iso
from server.storage.chat_store import to_stored
from server.storage.tables import Conversation, Message

FORMAT = "cero-export"
VERSION = 1
#: Conversations read per query of an account export.
PAGE = 50

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


async def _tree(conversation: dict[str, Any]) -> ConversationTree:
    rows = await (
        Message.select()
        .where(Message.conversation_id == conversation["id"])
        .order_by(Message.created_at)
        .output(load_json=True)
        .run()
    )
    return ConversationTree([to_stored(row) for row in rows], conversation.get("active_leaf_id"))


def conversation_export(conversation: dict[str, Any], tree: ConversationTree) -> dict[str, Any]:
    """One conversation of the JSON file: every message, oldest first."""
    return {
        "id": conversation["id"],
        "shortTitle": conversation["short_title"],
        "createdAt": iso(conversation["created_at"]),
        "updatedAt": iso(conversation["updated_at"]),
        "activeLeafId": tree.leaf,
        "messages": [message_export(m) for m in tree.all()],
    }


_STATUS_NOTE = {
    "streaming": "still being written when exported",
    "cancelled": "cancelled",
    "error": "failed",
    "interrupted": "interrupted",
}


def conversation_markdown(conversation: dict[str, Any], tree: ConversationTree) -> str:
    """The title, the active path, and a line counting what the other branches hold."""
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


def _render(conversation: dict[str, Any], tree: ConversationTree, fmt: Format) -> bytes:
    if fmt == "json":
        return orjson.dumps(conversation_export(conversation, tree))
    return conversation_markdown(conversation, tree).encode()


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
) -> AsyncGenerator[bytes, None]:
    """The export of ``conversations`` (pages of conversation rows), one conversation a
    chunk: the file's head comes with the first one (or alone, when there is none)."""
    pending = _head(fmt, exported_at, account)
    first = True
    async for page in conversations:
        for conversation in page:
            tree = await _tree(conversation)
            body = _render(conversation, tree, fmt)
            yield pending + (b"" if first else _separator(fmt)) + body
            pending = b""
            first = False
    tail = b"]}\n" if fmt == "json" else b""
    if first and fmt == "markdown":
        tail = b"*No conversations.*\n"
    yield pending + tail


async def one_conversation(row: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
    """One conversation as the pages :func:`export_chunks` reads."""
    yield [row]


def filename(fmt: Format, exported_at: datetime, conversation_id: str | None) -> str:
    extension = "json" if fmt == "json" else "md"
    if conversation_id is not None:
        return f"cero-conversation-{conversation_id}.{extension}"
    return f"cero-export-{as_utc(exported_at).strftime('%Y%m%dT%H%M%SZ')}.{extension}"
