"""Client → server WebSocket frames, parsed without trusting anything.

A pure function of the text (sans-I/O, like the hub): the transport turns a
:class:`FrameError` into a ``fault`` frame and keeps the socket open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from actors.api import Action
from server.chat.request import BranchRequest, ChatRequest, EditRequest
from server.core.validation import first_error
from server.http.nul_guard import MESSAGE as NUL_MESSAGE
from server.http.nul_guard import first_nul

MAX_ID = 64
MAX_CURSOR = 128


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ConversationFrame:
    """A frame about one conversation: ``subscribe``, ``unsubscribe``, ``cancel``."""

    conversation_id: str


@dataclass(frozen=True, slots=True)
class Subscribe(ConversationFrame):
    after: str | None  # the cursor ``epoch:seq`` to resume after


@dataclass(frozen=True, slots=True)
class Unsubscribe(ConversationFrame):
    pass


@dataclass(frozen=True, slots=True)
class Cancel(ConversationFrame):
    generation_id: str | None  # ``None``: whichever generation is running


@dataclass(frozen=True, slots=True)
class Send:
    """``send``, or a branch operation (``regenerate``, ``edit``, ``continue``) on the
    message ``target`` of ``request.conversationId`` (docs/api.md, Branches)."""

    request: ChatRequest
    action: Action = "send"
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Switch(ConversationFrame):
    message_id: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class WatchAccount:
    """``subscribe`` with ``channel: "account"``: the user's account channel."""

    after: str | None


@dataclass(frozen=True, slots=True)
class UnwatchAccount:
    """``unsubscribe`` with ``channel: "account"``."""


ClientFrame = (
    Subscribe | Unsubscribe | Send | Switch | Cancel | Ping | WatchAccount | UnwatchAccount
)


def _string(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise FrameError(
            "invalid_frame", f"{key}: a non-empty string of at most {limit} characters"
        )
    return value


def _optional_string(data: dict[str, Any], key: str, limit: int) -> str | None:
    return None if data.get(key) is None else _string(data, key, limit)


def parse_frame(text: str) -> ClientFrame:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_json", "The frame is not JSON") from None
    if not isinstance(data, dict):
        raise FrameError("invalid_frame", "The frame must be a JSON object")
    nul = first_nul(data, "frame")
    if nul is not None:  # as for HTTP bodies: PostgreSQL text cannot hold U+0000
        raise FrameError("invalid_frame", f"{nul}: {NUL_MESSAGE}")
    kind = data.get("type")
    if kind == "ping":
        return Ping()
    if kind in ("subscribe", "unsubscribe") and "channel" in data:
        if data["channel"] != "account":
            raise FrameError("invalid_frame", 'channel: the only channel is "account"')
        if kind == "subscribe":
            return WatchAccount(_optional_string(data, "after", MAX_CURSOR))
        return UnwatchAccount()
    if kind in ("subscribe", "unsubscribe", "cancel"):
        conversation_id = _string(data, "conversationId", MAX_ID)
        if kind == "subscribe":
            return Subscribe(conversation_id, _optional_string(data, "after", MAX_CURSOR))
        if kind == "cancel":
            return Cancel(conversation_id, _optional_string(data, "generationId", MAX_ID))
        return Unsubscribe(conversation_id)
    if kind == "send":
        fields = {k: v for k, v in data.items() if k != "type"}
        try:
            return Send(ChatRequest.model_validate(fields))
        except ValidationError as exc:
            field, message = first_error(exc, "frame")
            raise FrameError("invalid_frame", f"{field}: {message}") from None
    if kind in ("regenerate", "edit", "continue", "switch"):
        conversation_id = _string(data, "conversationId", MAX_ID)
        message_id = _string(data, "messageId", MAX_ID)
        if kind == "switch":
            return Switch(conversation_id, message_id)
        fields = {k: v for k, v in data.items() if k not in ("type", "messageId")}
        try:
            if kind == "edit":
                edit = EditRequest.model_validate(fields)
                request = edit.as_chat(conversation_id, edit.message)
            else:
                request = BranchRequest.model_validate(fields).as_chat(conversation_id)
        except ValidationError as exc:
            field, message = first_error(exc, "frame")
            raise FrameError("invalid_frame", f"{field}: {message}") from None
        action: Action = "edit" if kind == "edit" else kind
        return Send(request, action, message_id)
    if not isinstance(kind, str):
        raise FrameError("invalid_frame", "type: a string is required")
    raise FrameError("unknown_type", f"Unknown frame type {kind[:40]!r}")
