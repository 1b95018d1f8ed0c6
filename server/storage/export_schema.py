"""The export file's schema, version 2 (docs/api.md, "Export and import"), as pydantic
models: ``POST /api/import`` validates its body with them, and ``/openapi.json`` describes
both the import body and the export answer with them.

Version 2 adds a user message's ``attachments`` (metadata, and the bytes in base64 the
first time a conversation names one); a version 1 file (which has none) still imports:
both are read by the same models.

Ids in the file are the exporter's: the importer only uses them to link ``parentId``,
``activeLeafId`` and attachments, and mints new ones. Unknown keys are ignored
(docs/api.md, Conventions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from actors.clock import as_utc


def _timestamp(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError("an ISO 8601 timestamp needs its time zone (Z)")
    as_utc(moment)
    return text


Timestamp = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"format": "date-time"}),
    AfterValidator(_timestamp),
]
#: An id of the exporting server: any text, used only to link messages in the file.
FileId = Annotated[str, Field(min_length=1, max_length=128)]
Role = Literal["user", "assistant"]
#: A SHA-256 as the export writes it: 64 lowercase hex digits.
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
#: The most attachments one message carries (as in a send).
MAX_ATTACHMENTS = 10
Status = Literal["complete", "streaming", "cancelled", "error", "interrupted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ExportAttachment(_Strict):
    """One attachment of a user message (version 2). ``data``: the file's bytes in
    standard base64 (with padding), required the first time the conversation names the
    attachment's ``id`` and ignored after (the same file on an edited copy of a message)."""

    id: FileId
    name: str = Field(max_length=255)
    mimeType: str = Field(max_length=100)
    size: int = Field(ge=1)
    sha256: Sha256
    data: str | None = None


class ExportMessage(_Strict):
    id: FileId
    parentId: FileId | None = None
    role: Role
    content: str
    status: Status
    createdAt: Timestamp
    aiModel: str | None = Field(default=None, max_length=64)
    finishReason: str | None = Field(default=None, max_length=32)
    usage: dict[str, Any] | None = None
    citations: list[Any] | None = None
    tools: list[Any] | None = None
    #: A user message's attachments, in order (version 2).
    attachments: list[ExportAttachment] | None = Field(default=None, max_length=MAX_ATTACHMENTS)


class ExportConversation(_Strict):
    id: FileId
    shortTitle: str = Field(max_length=100)
    createdAt: Timestamp
    updatedAt: Timestamp
    activeLeafId: FileId | None = None
    messages: list[ExportMessage]


class ExportFile(_Strict):
    """``cero-export`` version 2 (or 1): one conversation or many."""

    format: Literal["cero-export"]
    version: Literal[1, 2]
    exportedAt: Timestamp | None = None
    conversations: list[ExportConversation]

    @field_validator("version", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool):  # true == 1 to Python, not to JSON
            raise ValueError("Input should be 1 or 2")
        return value


#: The keys each level of the file reads (NUL is refused in these only).
FILE_KEYS = frozenset(ExportFile.model_fields)
CONVERSATION_KEYS = frozenset(ExportConversation.model_fields)
MESSAGE_KEYS = frozenset(ExportMessage.model_fields)
