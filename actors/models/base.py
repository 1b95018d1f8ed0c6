"""The small protocol every model provider speaks.

A provider turns a :class:`ModelRequest` into an async stream of :class:`ModelEvent`:
answer text (:class:`TextDelta`), tool steps (:class:`ToolStep`) and exactly one
:class:`Final` at the end. Failures are raised as :class:`ModelError` with one of the
contract's error codes, so the actor never needs to know which SDK sits underneath.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["user", "assistant"]

#: Error codes a provider may raise (docs/api.md, "Error codes").
ErrorCode = Literal[
    "rate_limited",
    "upstream_unavailable",
    "upstream_timeout",
    "bad_request",
    "blocked",
    "internal",
]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a user message (docs/api.md, Attachments): what the model is told
    of it. Its bytes travel in :attr:`ModelRequest.attachment_data`, by ``id``."""

    id: str
    name: str
    mime_type: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "mimeType": self.mime_type, "size": self.size}

    def label(self) -> str:
        """How the TOON history and the demo model name it: ``[attachment: name, type,
        size]``."""
        return f"[attachment: {self.name}, {self.mime_type}, {self.size} bytes]"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One stored message as the model sees it."""

    role: Role
    content: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything a provider needs for one generation.

    ``system`` already contains the compressed (TOON) block of older turns, and
    ``contents`` the last turns verbatim, the new user message last.
    """

    model: str
    system: str
    contents: Sequence[ChatTurn]
    tools: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    #: The bytes of every attachment of ``contents`` (by :attr:`Attachment.id`), loaded
    #: once the request is fitted to the budget (:mod:`actors.generation`).
    attachment_data: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    total_tokens: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "promptTokens": self.prompt_tokens,
            "outputTokens": self.output_tokens,
            "thoughtsTokens": self.thoughts_tokens,
            "totalTokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Citation:
    uri: str
    title: str

    def as_json(self) -> dict[str, str]:
        return {"uri": self.uri, "title": self.title}


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer (never empty, never a thought)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolStep:
    """A tool step: ``tool`` is google_search | url_context | code_execution |
    code_execution_result, ``payload`` the contract's payload for it."""

    tool: str
    payload: dict[str, object]


@dataclass(frozen=True, slots=True)
class Final:
    """The end of a successful stream."""

    finish_reason: str = "STOP"
    usage: Usage = field(default_factory=Usage)
    citations: tuple[Citation, ...] = ()


ModelEvent = TextDelta | ToolStep | Final


class ModelError(Exception):
    """A generation failed; ``code`` is one of :data:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class ModelProvider(Protocol):
    """Streams one generation. Cancelling the consuming task must stop the stream."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...

    async def count_tokens(self, request: ModelRequest) -> int | None:
        """Exact prompt size when the provider can tell, else ``None``."""
        ...
