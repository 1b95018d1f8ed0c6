"""The stored side of generated titles (docs/api.md, Conversations): who may replace a
conversation's title, and the replacing itself.

``conversation.title_source`` says where the title came from (see
:class:`~server.storage.tables.Conversation`). Every step is one conditional ``UPDATE``,
so it is atomic on both engines and across the processes of cluster mode:

1. :func:`claim_title` turns ``message`` into ``model``: the one caller that changed the
   row asks the model, once per conversation (a second answer, another process, a retry
   find nothing to claim);
2. :func:`store_title` writes the model's title only while the source is still
   ``model``: a rename in between (``user``, written by ``PATCH``) is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from actors.models.titles import TITLE_INPUT_CHARS
from server.storage.tables import Conversation, Message

#: ``title_source`` values (docs/api.md, Conversations).
FROM_MESSAGE: Final = "message"
FROM_MODEL: Final = "model"
FROM_USER: Final = "user"
KEPT: Final = "kept"

_SUMMARY = (
    Conversation.id,
    Conversation.short_title,
    Conversation.created_at,
    Conversation.updated_at,
)


@dataclass(frozen=True, slots=True)
class TitleInputs:
    """What a title is written from: the answer's model and text, and the user message
    it answered."""

    model: str
    message: str
    answer: str


async def claim_title(conversation_id: str) -> bool:
    """Whether this caller is the one to ask the model (``message`` → ``model``)."""
    rows = (
        await Conversation.update({Conversation.title_source: FROM_MODEL})
        .where((Conversation.id == conversation_id) & (Conversation.title_source == FROM_MESSAGE))
        .returning(Conversation.id)
        .run()
    )
    return bool(rows)


async def title_inputs(conversation_id: str, message_id: str) -> TitleInputs | None:
    """The answer ``message_id`` and the user message before it; ``None`` when either is
    gone or the answer names no model."""
    # Only the head of each text leaves the database (``substr``: both engines): a title
    # reads TITLE_INPUT_CHARS of each, and a whole answer of 1 MiB read per title pinned
    # its memory (python -m tests.server.ops.test_memory: +32 % at the end, +21 % with this).
    rows = await Message.raw(
        "SELECT substr(content, 1, {}) AS content, model, parent_id, role FROM message "
        "WHERE id = {} AND conversation_id = {}",
        TITLE_INPUT_CHARS,
        message_id,
        conversation_id,
    ).run()
    answer = rows[0] if rows else None
    if answer is None or answer["role"] != "assistant" or not answer["model"]:
        return None
    if answer["parent_id"] is None:
        return None
    asked_rows = await Message.raw(
        "SELECT substr(content, 1, {}) AS content FROM message WHERE id = {}",
        TITLE_INPUT_CHARS,
        answer["parent_id"],
    ).run()
    asked = asked_rows[0] if asked_rows else None
    if asked is None:
        return None
    return TitleInputs(
        model=str(answer["model"]), message=str(asked["content"]), answer=str(answer["content"])
    )


async def store_title(conversation_id: str, title: str) -> dict[str, Any] | None:
    """Write the model's ``title`` unless the user renamed the conversation meanwhile;
    the row's summary as stored, or ``None`` when nothing was written. ``updated_at``
    stays: a title is not activity, the list keeps its order."""
    rows = (
        await Conversation.update({Conversation.short_title: title})
        .where((Conversation.id == conversation_id) & (Conversation.title_source == FROM_MODEL))
        .returning(*_SUMMARY)
        .run()
    )
    return dict(rows[0]) if rows else None


async def conversation_row(conversation_id: str) -> dict[str, Any] | None:
    """The conversation's summary row as stored now (``None``: deleted)."""
    row = (
        await Conversation.select(*_SUMMARY).where(Conversation.id == conversation_id).first().run()
    )
    return None if row is None else dict(row)
