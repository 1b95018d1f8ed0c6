"""The migration to branches: conversations stored before it (no parents, no active leaf)
become single paths, unchanged, on both engines."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest

from actors.clock import utcnow
from server.storage import db
from server.storage.chat_store import create_conversation
from server.storage.tables import Conversation, Message
from tests.auth_helpers import make_user_session

pytestmark = pytest.mark.asyncio(loop_scope="module")

BACKFILL = importlib.import_module("migrations.cero_2026_12_07t08_00_01_000000")


async def test_old_conversations_become_single_paths(database_url: str) -> None:
    engine = db.bind(database_url)
    await db.migrate(engine)
    await db.start_pool(engine)
    try:
        _, user_id = await make_user_session("Old rows")
        conversations = [str((await create_conversation(user_id, t))["id"]) for t in "ab"]
        start = utcnow() - timedelta(days=30)
        expected: dict[str, list[str]] = {}
        for n, cid in enumerate(conversations):
            ids = []
            for i in range(5):  # as stored before branches: no parent, no leaf
                mid = f"old{n}{i:02d}" + "x" * 16
                await Message.insert(
                    Message(
                        id=mid,
                        conversation_id=cid,
                        role="user" if i % 2 == 0 else "assistant",
                        content=f"m{i}",
                        status="complete",
                        created_at=start + timedelta(seconds=i),
                        updated_at=start + timedelta(seconds=i),
                    )
                ).run()
                ids.append(mid)
            expected[cid] = ids
        manager = await BACKFILL.forwards()
        await manager.run()
        for cid, ids in expected.items():
            rows = await (
                Message.select(Message.id, Message.parent_id)
                .where(Message.conversation_id == cid)
                .order_by(Message.created_at)
                .run()
            )
            assert [r["id"] for r in rows] == ids
            assert [r["parent_id"] for r in rows] == [None, *ids[:-1]]
            leaf = (
                await Conversation.select(Conversation.active_leaf_id)
                .where(Conversation.id == cid)
                .first()
                .run()
            )
            assert leaf == {"active_leaf_id": ids[-1]}
        # Run again: nothing changes (only NULLs are filled).
        await (await BACKFILL.forwards()).run()
        rows = (
            await Message.select(Message.parent_id)
            .where(Message.conversation_id == conversations[0])
            .order_by(Message.created_at)
            .run()
        )
        assert [r["parent_id"] for r in rows] == [None, *expected[conversations[0]][:-1]]
    finally:
        await db.close_pool(engine)
