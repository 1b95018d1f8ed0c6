"""Conversations: list (cursor pagination), messages, rename, delete, cancel, live events."""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from piccolo.columns import Column
from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.api import ConversationActor, Subscription
from actors.clock import as_utc, utcnow
from server.auth.current import CurrentUser, require_user
from server.chat.request import NO_NUL, NON_BLANK, no_nul
from server.chat.service import (
    cancel_generation,
    owned_conversation,
    refuse_while_draining,
    run_on_actor,
)
from server.core.app_keys import CATALOG, REGISTRY, SETTINGS
from server.core.errors import ApiError
from server.http import api_models as wire
from server.http.bodies import read_model
from server.limits.stream_limits import open_stream
from server.ops.metrics import METRICS
from server.routes.instructions import instruction_text
from server.routes.messages_view import conversation_json, conversation_messages
from server.storage import attachments
from server.storage.account_channel import ACCOUNT
from server.storage.attachments import BLOBS
from server.storage.conversation_titles import FROM_USER
from server.storage.tables import Conversation
from server.transports.liveness import watching
from server.transports.replay_budget import SSE_REPLAY, replay_within
from server.transports.response_pump import ResponsePump
from server.transports.sse import open_sse, ping_frame, sse_chunked, sse_frame

routes = web.RouteTableDef()

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = orjson.dumps([as_utc(row["updated_at"]).isoformat(), row["id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        stamp_text, conv_id = orjson.loads(raw)
        stamp = datetime.fromisoformat(stamp_text)
        if stamp.tzinfo is None or not isinstance(conv_id, str):
            raise ValueError("naive time")
        return stamp.astimezone(UTC), conv_id
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(
            400, "invalid_request", "cursor: not a cursor from this API", extra={"field": "cursor"}
        ) from None


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    user = require_user(request)
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid_request",
            f"limit: an integer from 1 to {MAX_LIMIT}",
            extra={"field": "limit"},
        )
    limit = int(raw_limit)
    query = Conversation.select(
        Conversation.id, Conversation.short_title, Conversation.created_at, Conversation.updated_at
    ).where(Conversation.user_id == user.id)
    cursor = request.query.get("cursor")
    if cursor:
        stamp, conv_id = _decode_cursor(cursor)
        query = query.where(
            (Conversation.updated_at < stamp)
            | ((Conversation.updated_at == stamp) & (Conversation.id < conv_id))
        )
    rows = (
        await query.order_by(Conversation.updated_at, Conversation.id, ascending=False)
        .limit(limit + 1)
        .run()
    )
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return wire.reply(
        wire.ConversationPage,
        {"conversations": [conversation_json(r) for r in rows[:limit]], "nextCursor": next_cursor},
    )


@routes.get("/api/conversations/{id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    user = require_user(request)
    conversation = await owned_conversation(request.match_info["id"], user.id)
    body = await conversation_messages(request, user.id, conversation, whole_tree=False)
    return wire.reply(wire.Messages, body)


def _one_field_required(schema: dict[str, Any]) -> None:
    """The JSON schema: ``shortTitle`` has no default to show, and one field is needed."""
    schema["properties"]["shortTitle"].pop("default", None)
    schema["anyOf"] = [{"required": ["shortTitle"]}, {"required": ["instructions"]}]


class Rename(BaseModel):
    """``PATCH /api/conversations/{id}``: a new ``shortTitle``, new ``instructions``
    (``null`` or blank clears them), or both; at least one of them."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_one_field_required)
    # The default is never validated, so `null` stays "Input should be a valid string" and
    # absence is told apart by `model_fields_set`.
    shortTitle: str = Field(default="", max_length=100, json_schema_extra={"pattern": NON_BLANK})
    instructions: str | None = Field(default=None, pattern=NO_NUL)

    @field_validator("shortTitle")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("must be a non-empty string")
        return no_nul(value)

    @field_validator("instructions")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return None if value is None else no_nul(value)


@routes.patch("/api/conversations/{id}")
async def rename(request: web.Request) -> web.Response:
    user = require_user(request)
    conversation = await owned_conversation(request.match_info["id"], user.id)
    body = await read_model(request, Rename)
    given = body.model_fields_set
    if not given & {"shortTitle", "instructions"}:
        # What a body without shortTitle was answered before instructions existed.
        raise ApiError(
            400, "invalid_request", "shortTitle: Field required", extra={"field": "shortTitle"}
        )
    now = utcnow()
    changes: dict[Column | str, Any] = {Conversation.updated_at: now}
    if "shortTitle" in given:
        changes[Conversation.short_title] = body.shortTitle
        # The user's title wins: a title being generated is not stored over it.
        changes[Conversation.title_source] = FROM_USER
        conversation["short_title"] = body.shortTitle
    if "instructions" in given:
        text = instruction_text(body.instructions, request.app[SETTINGS].max_instructions_chars)
        changes[Conversation.instructions] = text
        conversation["instructions"] = text
    await Conversation.update(changes).where(Conversation.id == conversation["id"]).run()
    if "instructions" in given:
        request.app[REGISTRY].deps.store.instructions_changed()  # the next send sees them
    conversation["updated_at"] = now
    if "shortTitle" in given:
        await request.app[ACCOUNT].conversation(user.id, "conversation.renamed", conversation)
    return wire.reply(
        wire.Renamed, {"conversation": conversation_json(conversation, with_instructions=True)}
    )


@routes.delete("/api/conversations/{id}")
async def delete(request: web.Request) -> web.Response:
    user = require_user(request)
    conversation = await owned_conversation(request.match_info["id"], user.id)
    hashes = await attachments.hashes_of_conversation(str(conversation["id"]))
    async with request.app[REGISTRY].deleting(str(conversation["id"])):
        # Its attachments' rows go with it (cascade); their bytes just after, unless
        # another attachment has the same content.
        await Conversation.delete().where(Conversation.id == conversation["id"]).run()
    await attachments.drop_unreferenced(request.app[BLOBS], hashes)
    await request.app[ACCOUNT].deleted(user.id, str(conversation["id"]))
    return wire.reply(wire.Deleted, {"deleted": True})


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    generationId: str | None = Field(default=None, max_length=64)


@routes.post("/api/conversations/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    user = require_user(request)
    body = await read_model(request, CancelBody)
    conversation_id = request.match_info["id"]
    cancelled = await cancel_generation(request.app, conversation_id, user.id, body.generationId)
    return wire.reply(wire.Cancelled, {"cancelled": cancelled})


@routes.get("/api/conversations/{id}/events")
async def events(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    refuse_while_draining(request.app)
    slot = await open_stream(request, user.id)  # 429 before the stream starts, past the caps
    try:
        return await _stream_events(request, user)
    finally:
        slot.release()


async def _stream_events(request: web.Request, user: CurrentUser) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    after = request.headers.get("Last-Event-ID") or request.query.get("after") or None
    from server.transports.wire import RawWriter

    chunked = request.version >= (1, 1)
    render = sse_chunked if chunked else sse_frame
    feed = ResponsePump(
        RawWriter(request),
        render,
        ping=ping_frame(chunked),
        ping_interval=settings.sse_ping_interval,
        on_reset=request.app[METRICS].slow_resets.labels("sse").inc,
    )
    actor, sub = await run_on_actor(
        request.app,
        request.match_info["id"],
        user.id,
        lambda actor: _subscribed(actor, after, feed),
    )
    # A resume's replay is paid for from the user's replay budget; past it, `reset`.
    budget = request.app[SSE_REPLAY].of(user.id)
    replay = replay_within(request.app, sub, render, budget) if after is not None else b""
    metrics = request.app[METRICS]
    metrics.connections.labels("sse").inc()
    try:
        response, writer, _ = await open_sse(request, {"X-Conversation-Id": actor.conversation_id})
        feed.writer = writer
        with contextlib.suppress(ConnectionError), watching(request.app, user, feed):
            await feed.run(sub, replay)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        metrics.connections.labels("sse").dec()
        await actor.unsubscribe(sub)


async def _subscribed(
    actor: ConversationActor, after: str | None, feed: ResponsePump
) -> tuple[ConversationActor, Subscription]:
    return actor, await actor.subscribe(after, feed.spec())


def _all_models(request: web.Request) -> bool:
    """``?all=true``: shut-down ids listed too (``false``, the default, leaves them out)."""
    value = request.query.get("all", "false").lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ApiError(400, "invalid_request", "all: true or false", extra={"field": "all"})


@routes.get("/api/models")
async def models(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    body: dict[str, object] = {
        "models": catalog.public_list(shut_down=_all_models(request)),
        "default": catalog.default_id,
        "geminiConfigured": catalog.gemini_enabled,
        "maxMessageChars": request.app[SETTINGS].max_message_chars,
    }
    if not catalog.gemini_enabled:
        body["note"] = (
            "No Gemini API key is configured (GOOGLE_GENERATIVE_AI_API_KEY): only the offline "
            "demo model is offered."
        )
    if catalog.offline_fallback:
        body["fallbacks"] = catalog.fallbacks()
        body["note"] = str(body["note"]) + (
            " Local mode: the Gemini model ids are accepted and answered by demo (listed in "
            "fallbacks)."
        )
    return wire.reply(wire.Models, body)
