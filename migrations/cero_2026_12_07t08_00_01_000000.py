"""Conversations as trees, the rows stored before them: each message's parent is the
message before it in its conversation (by ``created_at``, then ``id``), each conversation's
active leaf its newest message. Old conversations become single paths, unchanged.

Raw statements run before a migration's table operations, so this is a migration of its
own, after the one that adds the columns. Written once for both engines (a correlated
subquery; SQLite and PostgreSQL both run it).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T08:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "branches: parents and active leaves of the rows already stored"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def backfill() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE message SET parent_id = (SELECT p.id FROM message p "
            "WHERE p.conversation_id = message.conversation_id "
            "AND (p.created_at < message.created_at "
            "OR (p.created_at = message.created_at AND p.id < message.id)) "
            "ORDER BY p.created_at DESC, p.id DESC LIMIT 1) "
            "WHERE parent_id IS NULL"
        )
        await engine.run_ddl(
            "UPDATE conversation SET active_leaf_id = (SELECT m.id FROM message m "
            "WHERE m.conversation_id = conversation.id "
            "ORDER BY m.created_at DESC, m.id DESC LIMIT 1) "
            "WHERE active_leaf_id IS NULL"
        )
        await engine.run_ddl('CREATE INDEX IF NOT EXISTS message_parent ON message ("parent_id")')

    async def nothing() -> None:
        pass

    manager.add_raw(backfill)
    manager.add_raw_backwards(nothing)
    return manager
