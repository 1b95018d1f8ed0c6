"""What ``GET …/messages`` and ``GET …/tree`` answer: the messages (the active path, or
every branch) with their branch fields, the live text of a streaming answer and where to
resume it (docs/api.md, Conversations and Branches)."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from actors.api import ConversationActor, ConversationTree, StoredMessage
from actors.clock import as_utc, iso
from server.chat.service import run_on_actor
from server.core.app_keys import REGISTRY
from server.storage import attachments
from server.storage.chat_store import to_stored
from server.storage.tables import Message


def conversation_json(row: dict[str, Any], *, with_instructions: bool = False) -> dict[str, object]:
    """A *Conversation*; ``with_instructions``: its ``instructions`` too, when it has some
    (``…/messages``, ``…/tree`` and ``PATCH``; the listing leaves them out)."""
    out: dict[str, object] = {
        "id": row["id"],
        "shortTitle": row["short_title"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
    if with_instructions and row.get("instructions"):
        out["instructions"] = row["instructions"]
    return out


def message_json(message: StoredMessage, live_text: str | None = None) -> dict[str, object]:
    created = as_utc(message.created_at)
    out: dict[str, object] = {
        "id": message.id,
        "role": message.role,
        "content": live_text if live_text is not None else message.content,
        "status": message.status,
        "createdAt": iso(created),
        "timestamp": created.strftime("%H:%M"),
    }
    if message.role == "assistant":
        if message.model:
            out["aiModel"] = message.model
        if message.usage is not None:
            out["usage"] = message.usage
        if message.citations is not None:
            out["citations"] = message.citations
        if message.tools is not None:
            out["tools"] = message.tools
        if message.finish_reason:
            out["finishReason"] = message.finish_reason
        if message.generation_id:
            out["generationId"] = message.generation_id
    return out


async def conversation_messages(
    request: web.Request, user_id: str, conversation: dict[str, Any], *, whole_tree: bool
) -> dict[str, object]:
    """The body of ``…/messages`` (the active path) or ``…/tree`` (every branch)."""
    conversation_id = str(conversation["id"])
    rows = await (
        Message.select()
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at)
        .output(load_json=True)
        .run()
    )
    tree = ConversationTree([to_stored(row) for row in rows], conversation.get("active_leaf_id"))
    shown = tree.all() if whole_tree else tree.path()
    # A streaming answer gets the cursor to subscribe after: its generation replayed from
    # `init`, then live (asked of the actor, which in cluster mode reads the shared log).
    resume: dict[str, str] = {}
    for message in shown:
        if message.status == "streaming" and message.role == "assistant":
            cursor = await run_on_actor(
                request.app,
                conversation_id,
                user_id,
                partial(ConversationActor.resume_cursor, message_id=message.id),
            )
            if cursor is not None:
                resume[message.id] = cursor
    linked = await attachments.of_messages(m.id for m in shown if m.role == "user")
    actor = request.app[REGISTRY].peek(conversation_id)
    live = actor.streaming_answer() if actor is not None else None
    messages = []
    for message in shown:
        live_text = live[1] if live is not None and message.id == live[0] else None
        out = message_json(message, live_text)
        cursor = resume.get(message.id)
        if cursor is not None and out["status"] == "streaming":
            out["resumeCursor"] = cursor
        siblings = tree.siblings(message.id)
        out["parentId"] = message.parent_id
        out["siblingIds"] = siblings
        out["siblingIndex"] = siblings.index(message.id)
        out["siblingCount"] = len(siblings)
        if message.id in linked:
            out["attachments"] = [a.as_json() for a in linked[message.id]]
        messages.append(out)
    return {
        "conversation": conversation_json(conversation, with_instructions=True),
        "activeLeafId": tree.leaf,
        "messages": messages,
    }
