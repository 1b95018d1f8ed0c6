"""The body of a chat turn: ``POST /api/chat`` and the WebSocket ``send`` frame, and of
the branch operations (docs/api.md, Branches)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
AttachmentId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
#: The most attachments one message carries.
MAX_ATTACHMENTS_PER_MESSAGE = 10


#: What the validators below accept, stated for the JSON schema (``/openapi.json``): no
#: U+0000 anywhere, and (message, title) not only whitespace (``str.isspace``: Python's ``\s``).
NO_NUL = r"^[^\u0000]*$"
NON_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


class ChatRequest(BaseModel):
    """The body of ``POST /api/chat`` (and the fields of a WebSocket ``send``)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    message: str = Field(json_schema_extra={"pattern": NON_BLANK})
    conversationId: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    aiModel: str | None = Field(default=None, max_length=128, pattern=NO_NUL)
    tools: list[str] = Field(default_factory=list, max_length=8)
    clientMessageId: ClientId | None = None
    #: Ids of the sender's attachments (``POST /api/attachments``), sent with the message
    #: in this order (docs/api.md, Attachments). Optional: older clients send none
    #: (``None``: none for a send; an edit then keeps the edited message's).
    attachments: list[AttachmentId] | None = Field(
        default=None, max_length=MAX_ATTACHMENTS_PER_MESSAGE
    )

    @field_validator("message")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return no_nul(value)

    @field_validator("conversationId", "aiModel", "clientMessageId")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)


class BranchRequest(BaseModel):
    """The body of regenerate and continue (``POST …/messages/{messageId}/regenerate`` and
    the WebSocket frames; all optional: an empty body is fine)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    aiModel: str | None = Field(default=None, max_length=128, pattern=NO_NUL)
    tools: list[str] = Field(default_factory=list, max_length=8)
    clientMessageId: ClientId | None = None

    @field_validator("aiModel", "clientMessageId")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)

    def as_chat(self, conversation_id: str, message: str = "") -> ChatRequest:
        """The turn as the chat use-case takes it (validated already: not again)."""
        return ChatRequest.model_construct(
            message=message,
            conversationId=conversation_id,
            aiModel=self.aiModel,
            tools=self.tools,
            clientMessageId=self.clientMessageId,
        )


class EditRequest(BranchRequest):
    """The body of an edit: the new text, and what a regenerate takes; ``attachments``
    replace the edited message's (``[]``: none), left out it keeps them."""

    message: str = Field(json_schema_extra={"pattern": NON_BLANK})
    attachments: list[AttachmentId] | None = Field(
        default=None, max_length=MAX_ATTACHMENTS_PER_MESSAGE
    )

    def as_chat(self, conversation_id: str, message: str = "") -> ChatRequest:
        turn = super().as_chat(conversation_id, message)
        turn.attachments = None if self.attachments is None else list(self.attachments)
        return turn

    @field_validator("message")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return no_nul(value)


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold U+0000: refuse it as bad input, on every engine."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value
