"""What a conversation actor needs from persistence, as a protocol.

The actor owns *when* things are written (user message before ``init``, partial answers
flushed in batches, the terminal state before ``done``); the implementation in
``server/storage/chat_store.py`` owns *how* (Piccolo on SQLite or PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from actors.models.base import Attachment

MessageStatus = Literal["complete", "streaming", "cancelled", "error", "interrupted"]


class StoreUnavailable(Exception):
    """The database did not take a write within its bound (``503 not_ready``); retry later."""


@dataclass(slots=True)
class StoredMessage:
    id: str
    conversation_id: str
    role: Literal["user", "assistant"]
    content: str
    status: MessageStatus
    created_at: datetime
    model: str | None = None
    generation_id: str | None = None
    client_message_id: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    citations: list[dict[str, str]] | None = None
    tools: list[dict[str, object]] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: The message before it in its branch (``None``: a first message): see
    #: :mod:`actors.tree`.
    parent_id: str | None = None
    #: A user message's attachments, in the order sent (docs/api.md, Attachments).
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What :meth:`ConversationStore.start_generation` commits: a user's message and the answer
    row it starts (``streaming``, empty), both carrying the generation's id; or, for a
    regenerate (``answers`` set), only a new answer to that existing user message.

    ``parent_id``: the new user message's parent (the active leaf for a send, the edited
    message's parent for an edit). The answer becomes the conversation's active leaf."""

    conversation_id: str
    content: str
    generation_id: str
    client_message_id: str | None
    model: str
    parent_id: str | None = None
    answers: StoredMessage | None = None
    #: The new user message's attachments (checked: the sender's own, not yet used in
    #: another conversation); the store links them to it in order.
    attachments: tuple[Attachment, ...] = ()

    def rows(
        self, new_id: Callable[[], str], created_now: Callable[[], datetime]
    ) -> tuple[StoredMessage, StoredMessage]:
        """The user message (new, or ``answers``) and the new answer; ids and creation
        times are the store's."""
        if self.answers is not None:
            user = self.answers
        else:
            user = StoredMessage(
                id=new_id(),
                conversation_id=self.conversation_id,
                role="user",
                content=self.content,
                status="complete",
                created_at=created_now(),
                generation_id=self.generation_id,
                client_message_id=self.client_message_id,
                parent_id=self.parent_id,
                attachments=self.attachments,
            )
        answer = StoredMessage(
            id=new_id(),
            conversation_id=self.conversation_id,
            role="assistant",
            content="",
            status="streaming",
            created_at=created_now(),
            model=self.model,
            generation_id=self.generation_id,
            # A regenerate's key lives on its answer (it adds no user message).
            client_message_id=self.client_message_id if self.answers is not None else None,
            parent_id=user.id,
        )
        return user, answer


@dataclass(frozen=True, slots=True)
class ContinuedGeneration:
    """What :meth:`ConversationStore.continue_generation` commits: ``message`` (an answer
    that stopped early) is ``streaming`` again under a new generation, keeping its text,
    and is the conversation's active leaf."""

    conversation_id: str
    message_id: str
    generation_id: str
    client_message_id: str | None
    model: str


@dataclass(frozen=True, slots=True)
class Instructions:
    """What the user asked the model to keep in mind (docs/api.md, Instructions): their
    own text for every conversation, and this conversation's. ``None``: none set."""

    user: str | None = None
    conversation: str | None = None


class ClientMessageTaken(Exception):
    """``start_generation``'s key is already used by the same user, in another conversation (a
    send racing this one elsewhere won): answer with that turn, never start a second."""

    def __init__(self, client_message_id: str) -> None:
        super().__init__(f"clientMessageId already used: {client_message_id[:64]!r}")
        self.client_message_id = client_message_id


@dataclass(frozen=True, slots=True)
class Outcome:
    """The terminal state of an assistant message."""

    status: MessageStatus
    content: str
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    citations: list[dict[str, str]] | None = None
    tools: list[dict[str, object]] | None = None


class ConversationStore(Protocol):
    async def conversation_owner(self, conversation_id: str) -> str | None:
        """The owning user id, or ``None`` when the conversation does not exist."""
        ...

    async def history(self, conversation_id: str) -> list[StoredMessage]:
        """All messages of every branch, oldest first."""
        ...

    async def find_client_message(
        self, conversation_id: str, client_message_id: str
    ) -> tuple[StoredMessage, StoredMessage | None] | None:
        """The user message sent with this idempotency key and the answer it started.

        Keys are unique per user: the caller routes a send to the conversation that
        already holds its key, so looking in this conversation is enough."""
        ...

    async def start_generation(self, turn: NewGeneration) -> tuple[StoredMessage, StoredMessage]:
        """Commit the user message (unless the turn regenerates) and the ``streaming``
        answer row together, and make the answer the active leaf; raise
        :class:`ClientMessageTaken` when the conversation's owner already used the key."""
        ...

    async def continue_generation(self, turn: ContinuedGeneration) -> None:
        """Commit an answer's return to ``streaming`` under ``turn.generation_id`` (its
        text kept), as the active leaf; :class:`ClientMessageTaken` as above."""
        ...

    async def instructions(self, conversation_id: str) -> Instructions:
        """The user's and the conversation's instructions, for every generation: a change
        is seen from the next send on (a store may remember them until
        :meth:`instructions_changed`; cluster mode's reads the database every time)."""
        ...

    def instructions_changed(self) -> None:
        """Some instructions were written (by this process): forget any remembered."""
        ...

    async def attachment_data(self, attachment_ids: Sequence[str]) -> dict[str, bytes]:
        """The bytes of these attachments (those still stored: a missing one is left
        out), for the model request."""
        ...

    async def active_leaf(self, conversation_id: str) -> str | None:
        """The conversation's active leaf (``None``: not recorded; the newest message
        then stands for it)."""
        ...

    async def set_active_leaf(self, conversation_id: str, message_id: str) -> None:
        """Commit a switch of the active branch."""
        ...

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None:
        """Write ``(message id, characters already stored, new text)`` triples of streaming
        answers, together: each row keeps its first ``characters`` and gains the new text
        (what :class:`actors.flusher.Flusher` sends: what an answer gained since its last
        stored flush). Rows no longer ``streaming`` are left alone; a retry after a write
        the caller did not see stores the same content."""
        ...

    async def finish(self, message_id: str, outcome: Outcome) -> None:
        """Commit the terminal state of an assistant message."""
        ...

    def finish_later(self, message_id: str, outcome: Outcome) -> None:
        """Commit this terminal state in the background, retrying until the database
        takes it (the janitor for a terminal write that failed past its retries)."""
        ...

    async def interrupt_streaming(self, message_ids: Sequence[str] | None = None) -> int:
        """Mark ``streaming`` rows ``interrupted`` (all of them at start-up)."""
        ...

    async def interrupt_orphans(self, conversation_id: str, fence: int) -> list[tuple[str, str]]:
        """Cluster mode, a lease just taken with ``fence``: the conversation's ``streaming``
        rows were left by a dead owner. Mark them ``interrupted`` under the new fence and
        return their ``(message id, generation id)`` pairs."""
        ...

    async def streaming_conversations(self) -> list[str]:
        """Conversations with a ``streaming`` row (cluster mode's start-up sweep)."""
        ...
