"""Instructions (issue 24): ``cero_user.instructions`` (the user's "about me / how to
answer") and ``conversation.instructions`` (one conversation's own), both nullable text
sent in the system instruction (docs/api.md, Instructions). ``NULL``: none."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T09:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "cero_user.instructions and conversation.instructions"


def _params() -> dict[str, object]:
    return {
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
        table_class_name="User",
        tablename="cero_user",
        column_name="instructions",
        db_column_name="instructions",
        column_class_name="Text",
        column_class=Text,
        params=_params(),
        schema=None,
    )
    manager.add_column(
        table_class_name="Conversation",
        tablename="conversation",
        column_name="instructions",
        db_column_name="instructions",
        column_class_name="Text",
        column_class=Text,
        params=_params(),
        schema=None,
    )
    return manager
