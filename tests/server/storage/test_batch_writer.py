"""The batch writer's promise to a caller told a write failed: nothing of it stays live."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pytest

from actors.clock import utcnow
from actors.store import Outcome, StoredMessage, StoreUnavailable
from server.storage import db
from server.storage.batch_writer import BatchWriter, _Op
from server.storage.chat_store import create_conversation
from server.storage.tables import Message
from tests.auth_helpers import make_user_session
from tests.conditions import until


def _turn(conversation_id: str, n: int) -> tuple[StoredMessage, StoredMessage]:
    now = utcnow()
    user = StoredMessage(f"u{n:023d}", conversation_id, "user", "hi", "complete", now)
    answer = StoredMessage(f"a{n:023d}", conversation_id, "assistant", "", "streaming", now)
    return user, answer


async def test_a_turn_reported_failed_never_stays_streaming(tmp_path: Path) -> None:
    """A commit whose outcome was lost (a timeout after the rows were written) is
    reported as a failure; the answer row it left is marked ``error``, not ``streaming``."""
    engine = db.bind(f"sqlite:///{tmp_path / 'cero.db'}")
    await db.migrate(engine)
    _, user_id = await make_user_session("Writer")
    conversation_id = str((await create_conversation(user_id, "w"))["id"])
    writer = BatchWriter(engine, timeout=1.0)
    await writer.start()
    try:
        user, answer = _turn(conversation_id, 1)
        await writer.start_generation(user, answer)  # the rows are there...
        op = _Op("turn", [(answer.id,)])
        op.future = asyncio.get_running_loop().create_future()
        writer._fail([op], TimeoutError("lost"))  # ...but the caller heard a timeout
        with contextlib.suppress(StoreUnavailable):
            await op.future

        async def stored_error() -> bool:
            row = await Message.select(Message.status).where(Message.id == answer.id).first()
            return row is not None and row["status"] == "error"

        await until(stored_error, 5)
    finally:
        await writer.close()
        await db.close_pool(engine)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_lease_taken_over_interrupts_through_the_writer(database_url: str) -> None:
    """Cluster mode's take-over writes through the queue like every write: the streaming
    answer becomes ``interrupted`` under the new fence, is reported once, and the old
    owner's fenced writes change it no more."""
    engine = db.bind(database_url)
    await db.migrate(engine)
    await db.start_pool(engine)
    _, user_id = await make_user_session("Takeover")
    conversation_id = str((await create_conversation(user_id, "t"))["id"])
    writer = BatchWriter(engine, timeout=5.0)
    await writer.start()
    try:
        user, answer = _turn(conversation_id, 2)
        answer = dataclasses.replace(answer, generation_id="gen-old-owner")
        await writer.start_generation(user, answer, fence=1)
        await writer.append_partials([(answer.id, 0, "partial ")])
        taken = await writer.take_over(conversation_id, 2)
        assert taken == [(answer.id, "gen-old-owner")]
        assert await writer.take_over(conversation_id, 3) == []  # nothing left
        # The old owner has not heard yet: its flush and its terminal state are fenced out.
        await writer.append_partials([(answer.id, 8, "more")])
        await writer.finish(answer.id, Outcome("complete", "partial more"))
        row = (
            await Message.select(Message.status, Message.content, Message.fence)
            .where(Message.id == answer.id)
            .first()
        )
        assert row == {"status": "interrupted", "content": "partial ", "fence": 2}
        user_row = await Message.select(Message.status).where(Message.id == user.id).first()
        assert user_row == {"status": "complete"}
    finally:
        await writer.close()
        await db.close_pool(engine)
