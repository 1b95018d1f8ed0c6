"""Piccolo implementation of :class:`actors.store.ConversationStore`."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import orjson
import structlog

from actors.api import (
    Attachment,
    ClientMessageTaken,
    ContinuedGeneration,
    Instructions,
    MessageStatus,
    NewGeneration,
    Outcome,
    StoredMessage,
)
from actors.clock import as_utc, utcnow
from server.core.ids import new_id
from server.storage import attachments
from server.storage.attachment_blobs import BlobStore
from server.storage.batch_writer import BatchWriter
from server.storage.janitor import Janitor
from server.storage.tables import Conversation, Message

log = structlog.get_logger(__name__)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


#: How long a conversation's instructions are remembered (one process; a change made
#: through this process's routes is seen at once, one written elsewhere after this long).
INSTRUCTIONS_MEMORY_S = 30.0
INSTRUCTIONS_MEMORY_MAX = 10_000

# The unique index that makes a clientMessageId unique per user (a migration creates it).
CLIENT_KEY_INDEX = "message_user_client_id"


#: Background retries of attachment links (kept referenced until they end).
_LINKING: set[asyncio.Task[None]] = set()
LINK_RETRIES = 6


async def _link_later(message_id: str, conversation_id: str, linked: Sequence[Attachment]) -> None:
    for attempt in range(LINK_RETRIES):
        await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        try:
            await attachments.link(message_id, conversation_id, linked)
        except Exception as exc:
            log.warning("attachment_link_retrying", message_id=message_id, error=repr(exc)[:200])
            continue
        return
    log.error("attachment_link_failed", message_id=message_id)


def to_stored(row: dict[str, Any]) -> StoredMessage:
    created = row["created_at"]
    if isinstance(created, datetime):
        created = as_utc(created)
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"] or "",
        status=cast(MessageStatus, row["status"]),
        created_at=created,
        model=row.get("model"),
        generation_id=row.get("generation_id"),
        client_message_id=row.get("client_message_id"),
        finish_reason=row.get("finish_reason"),
        usage=_json(row.get("usage")),
        citations=_json(row.get("citations")),
        tools=_json(row.get("tools")),
        parent_id=row.get("parent_id"),
    )


class PiccoloConversationStore:
    """Rows are written by the owning actor only, so no write races need locking."""

    def __init__(
        self,
        writer: BatchWriter,
        *,
        fence_of: Callable[[str], int] | None = None,
        remember_instructions: bool = True,
        blobs: BlobStore | None = None,
    ) -> None:
        self.writer = writer
        #: Where attachments' bytes are kept (``None``: none are sent to the model).
        self.blobs = blobs
        #: conversation id → (its instructions, when read): see :meth:`instructions`.
        self._instructions: dict[str, tuple[Instructions, float]] = {}
        self._instructions_version = 0
        self._remember_instructions = remember_instructions
        self.janitor = Janitor(writer.finish)
        self._last_created: datetime | None = None
        #: conversation id → the fencing token of this process's lease on it (cluster
        #: mode passes its node's; 0 in one process): the answer row is written under it.
        self._fence_of: Callable[[str], int] = _no_fence if fence_of is None else fence_of

    @property
    def fence_of(self) -> Callable[[str], int]:
        """The fencing token a new turn's rows are written under (read-only: cluster mode
        gives it to the constructor)."""
        return self._fence_of

    def _created_now(self) -> datetime:
        # Messages are ordered by created_at: keep it strictly increasing in this process.
        now = utcnow()
        if self._last_created is not None and now <= self._last_created:
            now = self._last_created + timedelta(microseconds=1)
        self._last_created = now
        return now

    async def conversation_owner(self, conversation_id: str) -> str | None:
        row = (
            await Conversation.select(Conversation.user_id)
            .where(Conversation.id == conversation_id)
            .first()
            .run()
        )
        return None if row is None else str(row["user_id"])

    async def history(self, conversation_id: str) -> list[StoredMessage]:
        rows = (
            await Message.select()
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at)
            .output(load_json=True)
            .run()
        )
        messages = [to_stored(row) for row in rows]
        users = [m.id for m in messages if m.role == "user"]
        linked = await attachments.of_messages(users) if users else {}
        for message in messages:
            message.attachments = linked.get(message.id, ())
        return messages

    async def attachment_data(self, attachment_ids: Sequence[str]) -> dict[str, bytes]:
        if self.blobs is None:
            return {}
        return await attachments.data_of(self.blobs, attachment_ids)

    async def find_client_message(
        self, conversation_id: str, client_message_id: str
    ) -> tuple[StoredMessage, StoredMessage | None] | None:
        row = (
            await Message.select()
            .where(
                (Message.conversation_id == conversation_id)
                & (Message.client_message_id == client_message_id)
            )
            .first()
            .output(load_json=True)
            .run()
        )
        if row is None:
            return None
        if row["role"] == "assistant":
            # A regenerate's or a continue's key is on its answer: the turn is that answer
            # and the user message it answers.
            answer_row = to_stored(row)
            parent = (
                await Message.select()
                .where(Message.id == answer_row.parent_id)
                .first()
                .output(load_json=True)
                .run()
            )
            if parent is None:
                return None
            return to_stored(parent), answer_row
        user = to_stored(row)
        answer = None
        if user.generation_id:
            found = (
                await Message.select()
                .where(
                    (Message.conversation_id == conversation_id)
                    & (Message.generation_id == user.generation_id)
                    & (Message.role == "assistant")
                )
                .first()
                .output(load_json=True)
                .run()
            )
            answer = None if found is None else to_stored(found)
        return user, answer

    async def start_generation(self, turn: NewGeneration) -> tuple[StoredMessage, StoredMessage]:
        user, answer = turn.rows(new_id, self._created_now)
        owner = None
        if turn.client_message_id is not None:
            owner = await self.conversation_owner(turn.conversation_id)
        try:
            await self.writer.start_generation(
                user,
                answer,
                user_id=owner,
                fence=self.fence_of(turn.conversation_id),
                regenerate=turn.answers is not None,
            )
        except (sqlite3.IntegrityError, asyncpg.UniqueViolationError) as exc:
            if turn.client_message_id is not None and _violates_client_key(exc):
                raise ClientMessageTaken(turn.client_message_id) from None
            raise
        if turn.attachments and turn.answers is None:
            # After the turn's commit (the batch writer's, which knows no attachments).
            # The turn stands whatever happens here (its answer is already `streaming`):
            # links that fail are retried in the background, never failing the send.
            try:
                await attachments.link(user.id, turn.conversation_id, turn.attachments)
            except Exception as exc:
                log.warning("attachment_link_retrying", message_id=user.id, error=repr(exc)[:200])
                task = asyncio.get_running_loop().create_task(
                    _link_later(user.id, turn.conversation_id, turn.attachments)
                )
                _LINKING.add(task)
                task.add_done_callback(_LINKING.discard)
        return user, answer

    async def continue_generation(self, turn: ContinuedGeneration) -> None:
        owner = None
        if turn.client_message_id is not None:
            owner = await self.conversation_owner(turn.conversation_id)
        try:
            await self.writer.continue_generation(
                turn.conversation_id,
                turn.message_id,
                turn.generation_id,
                client_message_id=turn.client_message_id,
                user_id=owner,
                fence=self.fence_of(turn.conversation_id),
            )
        except (sqlite3.IntegrityError, asyncpg.UniqueViolationError) as exc:
            if turn.client_message_id is not None and _violates_client_key(exc):
                raise ClientMessageTaken(turn.client_message_id) from None
            raise

    async def instructions(self, conversation_id: str) -> Instructions:
        """Remembered per conversation (one process: every write of instructions goes
        through this process's routes, which call :meth:`instructions_changed`), at most
        :data:`INSTRUCTIONS_MEMORY_S`; read every time in cluster mode. Measured, bench
        scenario 4 on SQLite: reading them for every send added 1.0 ms to the added TTFT
        (2.04 → 3.03 ms p50; PostgreSQL +0.45 ms)."""
        if self._remember_instructions:
            found = self._instructions.get(conversation_id)
            if found is not None and time.monotonic() - found[1] < INSTRUCTIONS_MEMORY_S:
                return found[0]
        version = self._instructions_version
        instructions = await read_instructions(conversation_id)
        if self._remember_instructions and version == self._instructions_version:
            if len(self._instructions) >= INSTRUCTIONS_MEMORY_MAX:
                self._instructions.clear()
            self._instructions[conversation_id] = (instructions, time.monotonic())
        return instructions

    def instructions_changed(self) -> None:
        self._instructions_version += 1  # a read in flight does not store what it found
        self._instructions.clear()

    async def active_leaf(self, conversation_id: str) -> str | None:
        row = (
            await Conversation.select(Conversation.active_leaf_id)
            .where(Conversation.id == conversation_id)
            .first()
            .run()
        )
        return None if row is None or row["active_leaf_id"] is None else str(row["active_leaf_id"])

    async def set_active_leaf(self, conversation_id: str, message_id: str) -> None:
        await self.writer.set_active_leaf(conversation_id, message_id)

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None:
        await self.writer.append_partials(batch)

    async def finish(self, message_id: str, outcome: Outcome) -> None:
        await self.writer.finish(message_id, outcome)

    def finish_later(self, message_id: str, outcome: Outcome) -> None:
        self.janitor.adopt(message_id, outcome)

    async def interrupt_streaming(self, message_ids: Sequence[str] | None = None) -> int:
        query = Message.update({Message.status: "interrupted", Message.updated_at: utcnow()}).where(
            Message.status == "streaming"
        )
        if message_ids is not None:
            if not message_ids:
                return 0
            query = query.where(Message.id.is_in(list(message_ids)))
        rows = await query.returning(Message.id).run()
        return len(rows)

    async def interrupt_orphans(self, conversation_id: str, fence: int) -> list[tuple[str, str]]:
        return await self.writer.take_over(conversation_id, fence)

    async def streaming_conversations(self) -> list[str]:
        rows = (
            await Message.select(Message.conversation_id)
            .where(Message.status == "streaming")
            .distinct()
            .run()
        )
        return [str(row["conversation_id"]) for row in rows]


def _no_fence(conversation_id: str) -> int:
    return 0


def _violates_client_key(exc: Exception) -> bool:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return getattr(exc, "constraint_name", None) == CLIENT_KEY_INDEX
    # SQLite names the columns, not the index.
    return "message.user_id, message.client_message_id" in str(exc)


async def conversation_for_client_message(user_id: str, client_message_id: str) -> str | None:
    """The user's conversation holding the message sent with this key, if any."""
    row = (
        await Message.select(Message.conversation_id)
        .where((Message.user_id == user_id) & (Message.client_message_id == client_message_id))
        .first()
        .run()
    )
    return None if row is None else str(row["conversation_id"])


async def create_conversation(user_id: str, title: str) -> dict[str, Any]:
    now = utcnow()
    row = {
        "id": new_id(),
        "user_id": user_id,
        "short_title": title,
        "created_at": now,
        "updated_at": now,
    }
    await Conversation.insert(
        Conversation(
            id=row["id"], user_id=user_id, short_title=title, created_at=now, updated_at=now
        )
    ).run()
    return row


async def read_instructions(conversation_id: str) -> Instructions:
    """The conversation's and its user's instructions: one query, both rows by primary key
    (the user joined through ``conversation.user_id``)."""
    row = (
        await Conversation.select(
            Conversation.instructions,
            Conversation.user_id.instructions.as_alias("user_instructions"),
        )
        .where(Conversation.id == conversation_id)
        .first()
        .run()
    )
    if row is None:
        return Instructions()
    return Instructions(
        user=row["user_instructions"] or None, conversation=row["instructions"] or None
    )
