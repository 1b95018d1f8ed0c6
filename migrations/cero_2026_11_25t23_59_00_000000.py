"""Composite indexes: the two hot listings and the two unique pairs.

Raw statements run before a migration's table operations, so they need their own migration.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-25T23:59:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite and composite-unique indexes"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def create_indexes() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS conversation_user_updated "
            'ON conversation ("user_id", "updated_at" DESC)'
        )
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS message_conversation_created "
            'ON message ("conversation_id", "created_at")'
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS account_provider_account "
            'ON account ("provider", "provider_account_id")'
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS message_conversation_client_id "
            'ON message ("conversation_id", "client_message_id")'
        )

    async def drop_indexes() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP INDEX IF EXISTS conversation_user_updated")
        await engine.run_ddl("DROP INDEX IF EXISTS message_conversation_created")
        await engine.run_ddl("DROP INDEX IF EXISTS account_provider_account")
        await engine.run_ddl("DROP INDEX IF EXISTS message_conversation_client_id")

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
