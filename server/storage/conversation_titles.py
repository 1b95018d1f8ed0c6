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
    answer = (
        await Message.select(Message.content, Message.model, Message.parent_id, Message.role)
        .where((Message.id == message_id) & (Message.conversation_id == conversation_id))
        .first()
        .run()
    )
    if answer is None or answer["role"] != "assistant" or not answer["model"]:
        return None
    if answer["parent_id"] is None:
        return None
    asked = (
        await Message.select(Message.content).where(Message.id == answer["parent_id"]).first().run()
    )
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
