"""Redis values to Python and back: stream entry ids, event fields, viewer shares, and the
stored messages a forwarded send's reply carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from actors.api import Attachment, StoredMessage
from actors.clock import as_utc


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def seq_of(entry_id: Any) -> int:
    """A stream entry id is ``<seq>-0``: a cursor is a stream position."""
    return int(text(entry_id).split("-", 1)[0])


def event_data(fields: Any) -> dict[str, object]:
    raw = fields.get(b"d") if isinstance(fields, dict) else None
    if raw is None:
        return {}
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {}


def sum_viewers(shares: Any, now_ms: int) -> int:
    """Viewers over every process's unexpired share (``count:expires_ms``)."""
    total = 0
    for raw in (shares or {}).values():
        count, _, expires = text(raw).partition(":")
        if expires.isdigit() and int(expires) > now_ms and count.isdigit():
            total += int(count)
    return total


def message_json(m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "created_at": as_utc(m.created_at).isoformat(),
        "model": m.model,
        "generation_id": m.generation_id,
        "client_message_id": m.client_message_id,
        "finish_reason": m.finish_reason,
        "usage": m.usage,
        "citations": m.citations,
        "tools": m.tools,
        "parent_id": m.parent_id,
        "attachments": [attachment_json(a) for a in m.attachments],
    }


def message(data: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        id=data["id"],
        conversation_id=data["conversation_id"],
        role=data["role"],
        content=data["content"],
        status=data["status"],
        created_at=datetime.fromisoformat(data["created_at"]),
        model=data.get("model"),
        generation_id=data.get("generation_id"),
        client_message_id=data.get("client_message_id"),
        finish_reason=data.get("finish_reason"),
        usage=data.get("usage"),
        citations=data.get("citations"),
        tools=data.get("tools"),
        parent_id=data.get("parent_id"),
        attachments=attachments_of(data.get("attachments")),
    )


def attachment_json(a: Attachment) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "mime_type": a.mime_type, "size": a.size}


def attachments_of(data: Any) -> tuple[Attachment, ...]:
    """A forwarded send's or message's attachments (none from an older process)."""
    if not isinstance(data, list):
        return ()
    return tuple(
        Attachment(
            id=str(a["id"]), name=str(a["name"]), mime_type=str(a["mime_type"]), size=int(a["size"])
        )
        for a in data
        if isinstance(a, dict)
    )
