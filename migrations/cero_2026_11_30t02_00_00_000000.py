"""``message.fence``: the fencing token of the lease under which an answer row was written.

Cluster mode (``CERO_REDIS_URL``): every update of a generation's row says ``AND fence = ?``
with the token its owner took with the conversation's lease, so an owner that paused past
its lease cannot overwrite what the next owner wrote. One process leaves it at 0.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import BigInt
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-30T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.fence for cluster mode's fenced writes"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    manager.add_column(
        table_class_name="Message",
        tablename="message",
        column_name="fence",
        db_column_name="fence",
        column_class_name="BigInt",
        column_class=BigInt,
        params={
            "default": 0,
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
