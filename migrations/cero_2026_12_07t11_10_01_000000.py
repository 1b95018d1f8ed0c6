"""Generated titles, the conversations already stored: those with an answer keep their
title (``title_source = 'kept'``), as if it had been generated; those still waiting for
their first answer (``message``) get one after it.

Raw statements run before a migration's table operations, so this is a migration of its
own, after the one that adds the column. One statement for both engines.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T11:10:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "generated titles: the conversations already answered keep theirs"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def keep() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "UPDATE conversation SET title_source = 'kept' WHERE title_source = 'message' "
            "AND EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = conversation.id "
            "AND m.role = 'assistant')"
        )

    async def nothing() -> None:
        pass

    manager.add_raw(keep)
    manager.add_raw_backwards(nothing)
    return manager
