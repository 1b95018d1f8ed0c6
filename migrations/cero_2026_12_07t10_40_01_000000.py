"""Preferences (issue 25): ``cero_user.preferences``, the choices the web page and the CLI
remember per user (docs/api.md, Preferences): JSON ``{"tools": [...], "aiModel": ...}``,
nullable (``NULL``: none saved yet)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T10:40:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "cero_user.preferences"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_column(
        table_class_name="User",
        tablename="cero_user",
        column_name="preferences",
        db_column_name="preferences",
        column_class_name="JSON",
        column_class=JSON,
        params={
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
