"""``message.user_id``: the owner of a user message's ``clientMessageId``.

The contract makes the idempotency key unique per user, not per conversation; the next
migration fills the column for existing rows and indexes ``(user_id, client_message_id)``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T23:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.user_id for per-user clientMessageId"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Message",
        tablename="message",
        column_name="user_id",
        db_column_name="user_id",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 32,
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )
    return manager
