"""Response models of the HTTP API: handlers answer through :func:`reply`, which validates
the body against the model, and ``/openapi.json`` takes its response schemas from the same
classes, so the document and the wire cannot drift apart.

Optional keys a handler leaves out stay out (``exclude_unset``): ``aiModel?`` is absent,
not ``null``; a key the contract types ``string|null`` is always set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, RootModel

M = TypeVar("M", bound=BaseModel)


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


def reply(
    model: type[BaseModel],
    data: object,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Validate ``data`` as ``model`` and answer it as JSON (orjson)."""
    checked = model.model_validate(data)
    body = checked.model_dump(mode="json", exclude_unset=True)
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


# --- errors (docs/api.md's two shapes) ---------------------------------------------------


class ApiErrorBody(BaseModel):
    """``{"error": text, "code": code}``; a field error also names ``field``."""

    model_config = ConfigDict(extra="allow")
    error: str
    code: str
    field: str | None = None


class OAuthErrorBody(BaseModel):
    """Under ``/api/auth/``: ``{"error": code, "error_description": text}``."""

    model_config = ConfigDict(extra="allow")
    error: str
    error_description: str | None = None


# --- health ------------------------------------------------------------------------------


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")  # /readyz adds one key per check
    status: Literal["ok"]


# --- chat, conversations -----------------------------------------------------------------


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    description: str
    default: bool


class Models(Wire):
    models: list[ModelEntry]
    default: str
    geminiConfigured: bool
    #: CERO_MAX_MESSAGE_CHARS: the longest message a send takes (characters).
    maxMessageChars: int
    note: str | None = None
    fallbacks: dict[str, str] | None = None


class ConversationOut(Wire):
    id: str
    shortTitle: str
    createdAt: str
    updatedAt: str
    #: Only where docs/api.md says (``…/messages``, ``…/tree``, ``PATCH``), only when set.
    instructions: str | None = None


class ConversationPage(Wire):
    conversations: list[ConversationOut]
    nextCursor: str | None


class AttachmentRef(Wire):
    """An attachment as a message shows it (docs/api.md, Attachments)."""

    id: str
    name: str
    mimeType: str
    size: int


class AttachmentOut(AttachmentRef):
    sha256: str
    createdAt: str


class Uploaded(Wire):
    attachment: AttachmentOut


class MessageOut(Wire):
    id: str
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "streaming", "cancelled", "error", "interrupted"]
    createdAt: str
    timestamp: str
    aiModel: str | None = None
    usage: dict[str, Any] | None = None
    citations: list[Any] | None = None
    tools: list[Any] | None = None
    finishReason: str | None = None
    generationId: str | None = None
    resumeCursor: str | None = None
    parentId: str | None = None
    siblingIds: list[str] = []
    siblingIndex: int = 0
    siblingCount: int = 1
    attachments: list[AttachmentRef] | None = None


class Messages(Wire):
    conversation: ConversationOut
    activeLeafId: str | None = None
    messages: list[MessageOut]


class Switched(Wire):
    activeLeafId: str
    messageId: str


class Renamed(Wire):
    conversation: ConversationOut


class UserInstructions(Wire):
    """``GET``/``PUT /api/user/instructions``: ``null`` when none are set."""

    instructions: str | None


class UserPreferences(Wire):
    """``GET``/``PUT /api/user/preferences``: ``tools`` empty and ``aiModel`` ``null`` when
    nothing is saved."""

    tools: list[str]
    aiModel: str | None


class Deleted(Wire):
    deleted: Literal[True]


class Cancelled(Wire):
    cancelled: bool


class ImportedConversation(Wire):
    id: str
    shortTitle: str
    importedFrom: str


class ImportResult(Wire):
    """``POST /api/import``: the new conversations, in the file's order."""

    conversations: list[ImportedConversation]


# --- users, sessions ---------------------------------------------------------------------


class UserOut(Wire):
    id: str
    name: str
    email: str | None
    image: str | None
    emailVerified: bool | None = None


class WhoAmI(Wire):
    user: UserOut


class SessionOut(Wire):
    id: str
    userId: str
    expiresAt: str
    createdAt: str
    updatedAt: str


class CurrentSession(Wire):
    session: SessionOut
    user: UserOut


class MaybeSession(RootModel[CurrentSession | None]):
    pass


class SessionListEntry(Wire):
    id: str
    createdAt: str
    updatedAt: str
    expiresAt: str
    ipAddress: str | None
    userAgent: str | None
    current: bool


class SessionList(RootModel[list[SessionListEntry]]):
    pass


class Success(Wire):
    success: Literal[True]


class RevokeStatus(Wire):
    status: Literal[True]


# --- device flow, GitHub ------------------------------------------------------------------


class DeviceCode(Wire):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceToken(Wire):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


class DeviceLookup(Wire):
    user_code: str | None
    status: str
    # The rest only for the signed-in user who claimed the code.
    client_id: str | None = None
    scope: str | None = None
    clientName: str | None = None  # our fixed name for a known client, never request text
    verified: bool | None = None  # false: admitted only by CERO_DEVICE_CLIENT_IDS=*
    requestedAt: str | None = None  # ISO 8601, when the device asked for the code
    requestedFrom: str | None = None  # the address that asked (null for older codes)


class SignInUrl(Wire):
    url: str
    redirect: bool
