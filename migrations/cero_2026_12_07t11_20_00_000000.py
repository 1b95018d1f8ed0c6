"""Attachments (issue 26): ``attachment`` (an uploaded file's owner, conversation, name,
type, size and hash), ``message_attachment`` (a user message's attachments, in order) and
``attachment_chunk`` (the ``database`` store's bytes, PostgreSQL in cluster mode).

The unique index on ``attachment_chunk (sha256, seq)`` is made by the next migration: raw
statements run before a migration's table operations."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.column_types import (
    BigInt,
    Bytea,
    ForeignKey,
    Integer,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table

from server.core.ids import new_id

ID = "2026-12-07T11:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "attachment, message_attachment and attachment_chunk"


class User(Table, tablename="cero_user", schema=None):
    id = Varchar(length=32, default=new_id, primary_key=True)


class Conversation(Table, tablename="conversation", schema=None):
    id = Varchar(length=32, default=new_id, primary_key=True)


class Message(Table, tablename="message", schema=None):
    id = Varchar(length=32, default=new_id, primary_key=True)


class Attachment(Table, tablename="attachment", schema=None):
    id = Varchar(length=32, default=new_id, primary_key=True)


def _params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
    }
    params.update(overrides)
    return params


def _fk(references: type[Table], *, null: bool = False) -> dict[str, Any]:
    return _params(
        references=references,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.cascade,
        target_column=None,
        null=null,
        default=None,
        index=True,
    )


_ROW = (
    ("id", Varchar, _params(length=32, default=new_id, primary_key=True)),
    ("created_at", Timestamptz, _params(default=TimestamptzNow())),
)

_TABLES: dict[tuple[str, str], tuple[tuple[str, type[Any], dict[str, Any]], ...]] = {
    ("Attachment", "attachment"): (
        *_ROW,
        ("user_id", ForeignKey, _fk(User)),
        ("conversation_id", ForeignKey, _fk(Conversation, null=True)),
        ("name", Varchar, _params(length=255, default="")),
        ("mime_type", Varchar, _params(length=100, default="")),
        ("size", BigInt, _params(default=0)),
        ("sha256", Varchar, _params(length=64, default="", index=True)),
    ),
    ("MessageAttachment", "message_attachment"): (
        *_ROW,
        ("message_id", ForeignKey, _fk(Message)),
        ("attachment_id", ForeignKey, _fk(Attachment)),
        ("position", Integer, _params(default=0)),
    ),
    ("AttachmentChunk", "attachment_chunk"): (
        *_ROW,
        ("sha256", Varchar, _params(length=64, default="")),
        ("seq", Integer, _params(default=0)),
        ("data", Bytea, _params(default=b"")),
    ),
}


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)
    for (class_name, tablename), columns in _TABLES.items():
        manager.add_table(class_name=class_name, tablename=tablename, schema=None, columns=None)
        for name, column_class, params in columns:
            manager.add_column(
                table_class_name=class_name,
                tablename=tablename,
                column_name=name,
                db_column_name=name,
                column_class_name=column_class.__name__,
                column_class=column_class,
                params=params,
                schema=None,
            )
    return manager
