"""Attachments: one row per chunk of a stored file (``attachment_chunk``, unique on
``(sha256, seq)``: two processes storing the same file at once write it once), and the
lookup of a user's attachments by their hash."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T11:20:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "attachment_chunk (sha256, seq) unique"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def create_indexes() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS attachment_chunk_key "
            'ON attachment_chunk ("sha256", "seq")'
        )

    async def drop_indexes() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DROP INDEX IF EXISTS attachment_chunk_key")

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
