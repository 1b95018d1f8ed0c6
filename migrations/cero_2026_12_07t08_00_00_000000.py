"""Conversations as trees (issue 23): ``message.parent_id`` and
``conversation.active_leaf_id``.

Nullable: the next migration fills both in for the rows already stored (each message's
parent is the one before it, the leaf the newest), so an old conversation is one straight
path.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T08:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.parent_id and conversation.active_leaf_id (branches)"


def _params() -> dict[str, object]:
    return {
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
    }


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Message",
        tablename="message",
        column_name="parent_id",
        db_column_name="parent_id",
        column_class_name="Varchar",
        column_class=Varchar,
        params=_params(),
        schema=None,
    )
    manager.add_column(
        table_class_name="Conversation",
        tablename="conversation",
        column_name="active_leaf_id",
        db_column_name="active_leaf_id",
        column_class_name="Varchar",
        column_class=Varchar,
        params=_params(),
        schema=None,
    )
    return manager
