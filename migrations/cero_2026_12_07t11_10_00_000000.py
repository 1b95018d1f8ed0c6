"""Generated titles (issue 24): ``conversation.title_source``, where the title came from
(``message``, ``model``, ``user`` or ``kept``; docs/api.md, Conversations). Only a
``message`` title is replaced by the model's after the first answer, so a rename
(``user``) always wins.

Not null, ``message`` for the rows already stored; the next migration makes those that
already have an answer ``kept``: their title stays as it is.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T11:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation.title_source for generated titles"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Conversation",
        tablename="conversation",
        column_name="title_source",
        db_column_name="title_source",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 16,
            "default": "message",
            "null": False,
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
