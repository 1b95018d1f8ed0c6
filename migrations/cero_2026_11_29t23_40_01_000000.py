"""``clientMessageId`` unique per user: fill ``message.user_id``, index it with the key.

Existing keyed user messages get their conversation's owner. Should one user have used a
key in two conversations before (the bug this fixes), only the earliest message keeps the
key's user: the later ones stay stored but are no longer what a retry finds. The unique
index per conversation is then redundant and dropped. Raw statements run before a
migration's table operations, hence a migration of their own after the column's.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T23:40:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "clientMessageId unique per user"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def per_user() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE message SET user_id = "
            "(SELECT c.user_id FROM conversation c WHERE c.id = message.conversation_id) "
            "WHERE client_message_id IS NOT NULL AND role = 'user'"
        )
        # The earliest message of a (user, key) pair never matches, so it keeps its user
        # whatever order the rows are updated in.
        await engine.run_ddl(
            "UPDATE message SET user_id = NULL "
            "WHERE user_id IS NOT NULL AND EXISTS (SELECT 1 FROM message earlier "
            "WHERE earlier.user_id = message.user_id "
            "AND earlier.client_message_id = message.client_message_id "
            "AND (earlier.created_at < message.created_at "
            "OR (earlier.created_at = message.created_at AND earlier.id < message.id)))"
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS message_user_client_id "
            'ON message ("user_id", "client_message_id")'
        )
        await engine.run_ddl("DROP INDEX IF EXISTS message_conversation_client_id")

    async def per_conversation() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP INDEX IF EXISTS message_user_client_id")
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS message_conversation_client_id "
            'ON message ("conversation_id", "client_message_id")'
        )

    manager.add_raw(per_user)
    manager.add_raw_backwards(per_conversation)
    return manager
