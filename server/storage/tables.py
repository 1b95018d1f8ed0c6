"""Piccolo tables: users, sign-in state, conversations and messages.

IDs are opaque random strings (:func:`server.core.ids.new_id`). Composite unique and plain
indexes are created by raw SQL in the second migration: Piccolo's ``Unique`` constraint
breaks ``CREATE TABLE`` on SQLite, and it declares no composite index.
"""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from server.core.ids import new_id


class _Row:
    """Columns every table has (Piccolo copies a mixin's columns into each table): an id of
    at least 120 random bits minted here (docs/api.md, Conventions), and when the row was
    created."""

    id = Varchar(length=32, primary_key=True, default=new_id)
    created_at = Timestamptz()


class _EditedRow(_Row):
    """A row that changes after it is created, and when it last did."""

    updated_at = Timestamptz()


class User(_EditedRow, Table, tablename="cero_user"):
    name = Varchar(length=255, default="")
    email = Varchar(length=320, null=True, default=None)
    email_verified = Boolean(default=False)
    image = Text(null=True, default=None)
    #: "About me / how to answer", sent in every conversation's system instruction
    #: (docs/api.md, Instructions); ``NULL``: none.
    instructions = Text(null=True, default=None)
    #: Choices the web page and the CLI remember per user (docs/api.md, Preferences):
    #: ``{"tools": [...], "aiModel": ...}``; ``NULL``: none saved yet.
    preferences = JSON(null=True, default=None)


class Account(_Row, Table, tablename="account"):
    """A link between a user and an identity provider account (GitHub, local)."""

    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=32)
    provider_account_id = Varchar(length=128)


class Session(_EditedRow, Table, tablename="session"):
    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False, index=True)
    token_hash = Varchar(length=64, unique=True)
    expires_at = Timestamptz()
    ip_address = Varchar(length=64, null=True, default=None)
    user_agent = Text(null=True, default=None)


class DeviceCode(_Row, Table, tablename="device_code"):
    """An RFC 8628 device authorization; ``status``: pending|approved|denied|redeemed."""

    device_code_hash = Varchar(length=64, unique=True)
    user_code = Varchar(length=8, index=True)
    status = Varchar(length=16, default="pending")
    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=True, default=None)
    client_id = Varchar(length=255)
    scope = Text(default="")
    interval = Integer(default=5)
    last_polled_at = Timestamptz(null=True, default=None)
    expires_at = Timestamptz()
    #: The address that asked for the code (shown on /device); NULL for older rows.
    requested_from = Varchar(length=64, null=True, default=None)


class LocalSignInLink(_Row, Table, tablename="local_sign_in_link"):
    """A single-use local sign-in link (docs/api.md, Local sign-in): the SHA-256 of its
    token only; ``used_at`` is set by the one request that redeems it."""

    token_hash = Varchar(length=64, unique=True)
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)


class Conversation(_EditedRow, Table, tablename="conversation"):
    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False)
    short_title = Varchar(length=100, default="")
    #: The last message of the active branch (docs/api.md, Branches); ``NULL``: none yet.
    active_leaf_id = Varchar(length=32, null=True, default=None)
    #: This conversation's own instructions, after the user's (docs/api.md, Instructions).
    instructions = Text(null=True, default=None)
    #: Where ``short_title`` came from (docs/api.md, Conversations): ``message`` (the first
    #: message's words, until the first answer), ``model`` (the model was asked: its
    #: title, or the first words still when it could not write one), ``user`` (a rename:
    #: never replaced by a generated title) or ``kept`` (imported, or stored before titles
    #: were generated). Only ``message`` is ever replaced by a generated title.
    title_source = Varchar(length=16, default="message")


class Message(_EditedRow, Table, tablename="message"):
    """``role``: user|assistant; ``status``: complete|streaming|cancelled|error|interrupted."""

    conversation_id = ForeignKey(Conversation, on_delete=OnDelete.cascade, null=False)
    role = Varchar(length=16)
    content = Text(default="")
    status = Varchar(length=16, default="complete")
    model = Varchar(length=64, null=True, default=None)
    generation_id = Varchar(length=32, null=True, default=None)
    usage = JSON(null=True, default=None)
    tools = JSON(null=True, default=None)
    citations = JSON(null=True, default=None)
    finish_reason = Varchar(length=32, null=True, default=None)
    client_message_id = Varchar(length=128, null=True, default=None, index=True)
    # The conversation's owner, on a user message sent with a ``client_message_id``: the
    # key is unique per user (a unique index on both), not per conversation.
    user_id = Varchar(length=32, null=True, default=None)
    # Cluster mode: the lease's fencing token its writer held (0 in one process); every
    # update of a generation's row is conditional on it (``cluster/``).
    fence = BigInt(default=0)
    #: The message before it in its branch; ``NULL`` for a first message (an index
    #: ``message_parent`` is made by the migration that fills it in).
    parent_id = Varchar(length=32, null=True, default=None)


class Attachment(_Row, Table, tablename="attachment"):
    """An uploaded file (docs/api.md, Attachments): its owner, and the conversation it was
    first sent in (``NULL`` until then; deleted with it). The bytes are kept by the
    attachment store under ``sha256`` (server/storage/attachment_blobs.py); ``name`` is
    for display only (never a path)."""

    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False, index=True)
    conversation_id = ForeignKey(
        Conversation, on_delete=OnDelete.cascade, null=True, default=None, index=True
    )
    name = Varchar(length=255)
    mime_type = Varchar(length=100)
    size = BigInt()
    sha256 = Varchar(length=64, index=True)


class MessageAttachment(_Row, Table, tablename="message_attachment"):
    """A user message's attachments, in the order sent."""

    message_id = ForeignKey(Message, on_delete=OnDelete.cascade, null=False, index=True)
    attachment_id = ForeignKey(Attachment, on_delete=OnDelete.cascade, null=False, index=True)
    position = Integer(default=0)


class AttachmentChunk(_Row, Table, tablename="attachment_chunk"):
    """The ``database`` attachment store: a file's bytes in order, ``seq`` from 0, at most
    :data:`server.storage.attachment_blobs.CHUNK_BYTES` a row (unique on both)."""

    sha256 = Varchar(length=64)
    seq = Integer()
    data = Bytea()


TABLES: tuple[type[Table], ...] = (
    User,
    Account,
    Session,
    DeviceCode,
    LocalSignInLink,
    Conversation,
    Message,
    Attachment,
    MessageAttachment,
    AttachmentChunk,
)
