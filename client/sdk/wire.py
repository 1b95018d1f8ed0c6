"""The shapes on the wire, typed: REST answers, live events and WebSocket frames.

Written from docs/api.md (the API reference). Every JSON object the server sends is a
``TypedDict`` here, so a caller's type checker sees the fields (``NotRequired`` where the
reference says a key may be absent: optional keys are absent, never ``null``). Live events
are tagged unions on ``type``: ``if event["type"] == "token": event["text"]`` narrows.

Nothing is validated at run time: the server is the one source of these shapes (its own
response models check every JSON answer on the way out), and an unknown field or event
type from a newer server passes through untouched.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

# --- REST -----------------------------------------------------------------------------------

Role = Literal["user", "assistant"]
MessageStatus = Literal["complete", "streaming", "cancelled", "error", "interrupted"]
Tool = Literal["google_search", "url_context", "code_execution"]


class User(TypedDict):
    id: str
    name: str
    email: str | None
    image: str | None


class ModelEntry(TypedDict):
    id: str
    name: str
    description: str
    default: bool
    tools: list[str]
    status: Literal["available", "deprecated", "shut_down"]
    inputTokenLimit: NotRequired[int]
    successor: NotRequired[str]


class ModelCatalog(TypedDict):
    models: list[ModelEntry]
    default: str
    geminiConfigured: bool
    note: NotRequired[str]
    fallbacks: NotRequired[dict[str, str]]


class Conversation(TypedDict):
    id: str
    shortTitle: str
    createdAt: str
    updatedAt: str
    instructions: NotRequired[str]


class ConversationPage(TypedDict):
    conversations: list[Conversation]
    nextCursor: str | None


class Usage(TypedDict):
    promptTokens: int
    outputTokens: int
    thoughtsTokens: int
    totalTokens: int


class Citation(TypedDict):
    uri: str
    title: str


class ToolStep(TypedDict):
    tool: str
    payload: dict[str, Any]


class Message(TypedDict):
    id: str
    role: Role
    content: str
    status: MessageStatus
    createdAt: str
    timestamp: str
    aiModel: NotRequired[str]
    usage: NotRequired[Usage]
    citations: NotRequired[list[Citation]]
    tools: NotRequired[list[ToolStep]]
    finishReason: NotRequired[str]
    generationId: NotRequired[str]
    resumeCursor: NotRequired[str]
    parentId: NotRequired[str | None]
    siblingIds: NotRequired[list[str]]
    siblingIndex: NotRequired[int]
    siblingCount: NotRequired[int]


class ConversationMessages(TypedDict):
    conversation: Conversation
    activeLeafId: NotRequired[str | None]
    messages: list[Message]


class SearchResult(TypedDict):
    kind: Literal["message", "title"]
    conversationId: str
    conversationTitle: str
    snippet: str
    createdAt: str
    messageId: NotRequired[str]
    role: NotRequired[Role]
    onActivePath: NotRequired[bool]


class SearchPage(TypedDict):
    results: list[SearchResult]
    nextCursor: str | None


class ImportedConversation(TypedDict):
    id: str
    shortTitle: str
    importedFrom: str


class Switched(TypedDict):
    activeLeafId: str
    messageId: str


# --- conversation events (docs/api.md "Live events") -----------------------------------------


class _LogEvent(TypedDict):
    conversationId: str
    epoch: str
    seq: int


class UserMessage(TypedDict):
    id: str
    role: Literal["user"]
    content: str
    createdAt: str
    clientMessageId: NotRequired[str | None]
    parentId: NotRequired[str | None]


class MessageEvent(_LogEvent):
    type: Literal["message"]
    message: UserMessage


class InitEvent(_LogEvent):
    type: Literal["init"]
    messageId: str
    userMessageId: str
    generationId: str
    aiModel: str
    action: NotRequired[Literal["send", "edit", "regenerate", "continue"]]


class BranchEvent(_LogEvent):
    type: Literal["branch"]
    activeLeafId: str
    messageId: str


class TokenEvent(_LogEvent):
    type: Literal["token"]
    messageId: str
    text: str
    merged: NotRequired[int]


class ToolEvent(_LogEvent):
    type: Literal["tool"]
    messageId: str
    tool: str
    payload: dict[str, Any]


class DoneEvent(_LogEvent):
    type: Literal["done"]
    messageId: str
    generationId: NotRequired[str]
    fullText: str
    finishReason: str
    usage: Usage
    citations: list[Citation]


class ErrorEvent(_LogEvent):
    type: Literal["error"]
    messageId: NotRequired[str]
    generationId: NotRequired[str]
    code: str
    error: str


class CancelledEvent(_LogEvent):
    type: Literal["cancelled"]
    messageId: str
    generationId: str
    fullText: NotRequired[str]


class PresenceEvent(_LogEvent):
    type: Literal["presence"]
    viewers: int


class ResetEvent(_LogEvent):
    """The cursor could not be replayed: refetch over REST; live events follow from
    ``seq + 1``."""

    type: Literal["reset"]


ConversationEvent: TypeAlias = (
    MessageEvent
    | InitEvent
    | BranchEvent
    | TokenEvent
    | ToolEvent
    | DoneEvent
    | ErrorEvent
    | CancelledEvent
    | PresenceEvent
    | ResetEvent
)
#: A generation's end: ``done``, ``error`` or ``cancelled``.
TERMINAL_TYPES = frozenset({"done", "error", "cancelled"})

# --- account events (docs/api.md "Account channel") ------------------------------------------


class _AccountEvent(TypedDict):
    channel: Literal["account"]
    epoch: str
    seq: int


class ConversationCreated(_AccountEvent):
    type: Literal["conversation.created"]
    conversationId: str
    conversation: Conversation


class ConversationRenamed(_AccountEvent):
    type: Literal["conversation.renamed"]
    conversationId: str
    conversation: Conversation


class ConversationDeleted(_AccountEvent):
    type: Literal["conversation.deleted"]
    conversationId: str


class AnswerStarted(_AccountEvent):
    type: Literal["answer.started"]
    conversationId: str
    conversation: Conversation
    messageId: str
    generationId: str


class AnswerEnded(_AccountEvent):
    type: Literal["answer.ended"]
    conversationId: str
    conversation: Conversation
    messageId: str
    generationId: str
    status: MessageStatus


class SessionRevoked(_AccountEvent):
    type: Literal["session.revoked"]
    sessionId: str


class AccountReset(_AccountEvent):
    """The cursor could not be replayed: refetch ``GET /api/conversations``."""

    type: Literal["reset"]


AccountEvent: TypeAlias = (
    ConversationCreated
    | ConversationRenamed
    | ConversationDeleted
    | AnswerStarted
    | AnswerEnded
    | SessionRevoked
    | AccountReset
)

# --- WebSocket frames (docs/api.md "WebSocket") -----------------------------------------------


class Subscribed(TypedDict):
    type: Literal["subscribed"]
    epoch: str
    seq: int
    recovered: bool
    conversationId: NotRequired[str]
    channel: NotRequired[Literal["account"]]


class Unsubscribed(TypedDict):
    """A subscription ended on the server's side (the conversation was deleted)."""

    type: Literal["unsubscribed"]
    reason: str
    conversationId: NotRequired[str]
    channel: NotRequired[Literal["account"]]


class GenerationAck(TypedDict):
    """The ack of ``send``, ``regenerate``, ``edit`` and ``continue``."""

    type: Literal["ack"]
    of: str
    conversationId: str
    generationId: str
    userMessageId: str
    messageId: str
    retried: bool


class CancelAck(TypedDict):
    type: Literal["ack"]
    of: Literal["cancel"]
    conversationId: str
    cancelled: bool


class SwitchAck(TypedDict):
    type: Literal["ack"]
    of: Literal["switch"]
    conversationId: str
    activeLeafId: str
    messageId: str


#: What a live feed yields: an event of a followed log, or the end of a subscription.
LiveEvent: TypeAlias = ConversationEvent | AccountEvent | Unsubscribed

ACCOUNT: Literal["account"] = "account"
"""The key of the account channel among a feed's logs (a conversation id is never it)."""
