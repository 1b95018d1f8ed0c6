"""Local sign-in links (issue 25): ``local_sign_in_link``, one row per link printed by
``cero-api serve`` or ``cero-api sign-in-link`` (docs/api.md, Local sign-in): the SHA-256
of its token, when it expires, when it was used. Kept in the database, not in memory, so
that another process (the command) can issue a link the running server accepts."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.indexes import IndexMethod

from server.core.ids import new_id

ID = "2026-12-07T10:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "local_sign_in_link"

TABLE = "local_sign_in_link"


def _params(**overrides: Any) -> dict[str, Any]:
    return {
        "default": None,
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **overrides,
    }


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_table(class_name="LocalSignInLink", tablename=TABLE, schema=None, columns=None)
    columns: list[tuple[str, type[Any], dict[str, Any]]] = [
        ("id", Varchar, _params(length=32, default=new_id, primary_key=True)),
        ("created_at", Timestamptz, _params(default=TimestamptzNow())),
        ("token_hash", Varchar, _params(length=64, default="", unique=True)),
        ("expires_at", Timestamptz, _params(default=TimestamptzNow())),
        ("used_at", Timestamptz, _params(null=True)),
    ]
    for name, column_class, params in columns:
        manager.add_column(
            table_class_name="LocalSignInLink",
            tablename=TABLE,
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
