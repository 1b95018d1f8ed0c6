"""The chat use-cases shared by the HTTP routes and the WebSocket: start a turn, cancel
it, rebuild a finished turn's events, and run a command on a conversation's actor.

Starting a turn (``POST /api/chat`` and the WebSocket ``send`` frame):

Validates the request against the catalog (400), finds or creates the conversation
(404 for another user's), honours ``clientMessageId`` across the user's conversations
(unique per user: a retry is routed to the conversation holding the key, and the database
enforces it with a unique index), and hands the turn to the conversation's actor (409 when
it is busy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiohttp import web

from actors.api import (
    Action,
    ActorStopped,
    Attachment,
    ClientMessageTaken,
    ConversationActor,
    ConversationBusy,
    ConversationNotFound,
    GenerationTiming,
    InvalidTarget,
    MessageNotFound,
    NotContinuable,
    SendResult,
    SubscribeSpec,
)
from actors.error_text import error_text
from actors.models.catalog import UnknownModel, UnsupportedTools
from actors.models.titles import provisional_title
from server.auth.current import CurrentUser
from server.chat.request import ChatRequest
from server.core.app_keys import CATALOG, CLIENT_LOCKS, REGISTRY, SETTINGS
from server.core.errors import ApiError
from server.limits.admission import ADMISSION
from server.limits.refusals import require_redis
from server.limits.user_limits import USER_LIMITS
from server.storage import attachments
from server.storage.account_channel import ACCOUNT
from server.storage.attachments import AttachmentRefused
from server.storage.chat_store import (
    conversation_for_client_message,
    create_conversation,
)
from server.storage.tables import Conversation, Message

log = structlog.get_logger(__name__)
T = TypeVar("T")


def not_found() -> ApiError:
    return ApiError(404, "not_found", "Conversation not found")


def busy() -> ApiError:
    return ApiError(409, "conversation_busy", "This conversation is already generating an answer")


def message_not_found() -> ApiError:
    return ApiError(404, "not_found", "Message not found")


def refused_target(exc: Exception) -> ApiError:
    """What a branch operation's refusal of its target answers (docs/api.md, Branches)."""
    if isinstance(exc, MessageNotFound):
        return message_not_found()
    if isinstance(exc, NotContinuable):
        return ApiError(
            409,
            "not_continuable",
            "Only an answer at the end of its branch that stopped early (MAX_TOKENS, "
            "cancelled or interrupted) can be continued",
        )
    return ApiError(400, "invalid_request", f"messageId: {exc}", extra={"field": "messageId"})


def shutting_down() -> ApiError:
    return ApiError(503, "server_shutdown", "The server is shutting down")


def refuse_while_draining(app: web.Application) -> None:
    """SIGTERM: new live connections (WebSocket, SSE) and generations go elsewhere."""
    if app[REGISTRY].draining:
        raise shutting_down()


async def lookup_actor(
    app: web.Application, conversation_id: str, user_id: str
) -> ConversationActor:
    try:
        return await app[REGISTRY].get_or_spawn(conversation_id, user_id)
    except ConversationNotFound:
        raise not_found() from None
    except ActorStopped:
        raise shutting_down() from None


async def run_on_actor(
    app: web.Application,
    conversation_id: str,
    user_id: str,
    command: Callable[[ConversationActor], Awaitable[T]],
) -> T:
    """Run one actor command; an actor that stopped under us (idle stop, delete, crash)
    is looked up again, which respawns it or answers 404 once the conversation is gone.
    This is the one retry loop for a stopped actor: at most three attempts."""
    for _ in range(3):
        actor = await lookup_actor(app, conversation_id, user_id)
        try:
            return await command(actor)
        except ActorStopped:
            continue
    raise shutting_down()


async def start_chat(
    app: web.Application,
    user: CurrentUser,
    body: ChatRequest,
    subscribe: SubscribeSpec | None,
    *,
    timing: GenerationTiming | None = None,
    action: Action = "send",
    target: str | None = None,
) -> SendResult:
    """``timing``: the turn's clock (phases ``admit``, ``lookup`` and the actor's).
    ``action``/``target``: a branch operation on the message ``target`` of
    ``body.conversationId`` (docs/api.md, Branches); ``send`` appends as always."""
    admitted = time.perf_counter()
    refuse_while_draining(app)  # SIGTERM: running answers finish, no new one starts
    await require_redis(app)  # cluster mode: 503 not_ready while Redis is down
    settings = app[SETTINGS]
    catalog = app[CATALOG]
    if len(body.message) > settings.max_message_chars:
        raise ApiError(
            400,
            "invalid_request",
            f"message: at most {settings.max_message_chars} characters",
            extra={"field": "message"},
        )
    model_id = body.aiModel
    if action == "continue" and model_id is None and target is not None:
        # The model that wrote the answer goes on (the default if it is no longer offered).
        model_id = await _model_of(str(body.conversationId), target)
        try:
            catalog.resolve(model_id)
        except UnknownModel:
            model_id = None
    try:
        model = catalog.resolve(model_id)
        tools = catalog.check_tools(model, body.tools)
    except UnknownModel as exc:
        raise ApiError(
            400, "unknown_model", f"aiModel: {exc}", extra={"field": "aiModel"}
        ) from None
    except UnsupportedTools as exc:
        raise ApiError(
            400, "unsupported_tools", f"tools: {exc}", extra={"field": "tools"}
        ) from None

    lock = contextlib.nullcontext()
    if body.clientMessageId is not None:
        key = (user.id, body.clientMessageId)
        client_locks = app[CLIENT_LOCKS]
        lock_obj = client_locks.get(key)
        if lock_obj is None:
            lock_obj = asyncio.Lock()
            client_locks[key] = lock_obj
        lock = lock_obj  # type: ignore[assignment]
    async with lock:
        conversation_id = body.conversationId
        retry = False
        if body.clientMessageId is not None:
            # The key is unique per user: a retry goes to the turn it started, whatever
            # conversation it names (or none), and gets that turn back.
            earlier = await conversation_for_client_message(user.id, body.clientMessageId)
            if earlier is not None:
                conversation_id = earlier
                retry = True
        # A retry starts nothing: it is never queued or refused for capacity. A start
        # counts against admission until its generation has begun (the send returns).
        starting = contextlib.nullcontext() if retry else app[ADMISSION].admitted()
        limits = app[USER_LIMITS]
        async with starting:
            # A retry starts nothing, so no limit refuses it (it gets its turn back, 200).
            # The slot is taken before the actor commits the turn: the count is exact.
            try:
                slot = None if retry else await limits.reserve_generation(user.id)
            except ApiError:
                # CONTRACT: a conversation already generating answers 409, limit or not.
                actor = app[REGISTRY].peek(conversation_id) if conversation_id else None
                if actor is not None and actor.owner_id == user.id and actor.streaming_answer():
                    raise busy() from None
                raise
            try:
                if not retry:
                    # After the slot, inside its try: a send refused here gives the slot back
                    # (finally), and a send the slot refused was not counted (see
                    # server.limits.user_limits).
                    await limits.admit_send(user.id)
                # Checked before a new conversation is made: a refused send makes none.
                sent_along = await _attachments_of(user.id, conversation_id, body, action, target)
                if conversation_id is None:
                    await limits.admit_new_conversation(user.id)
                    # The model's title replaces it after the first answer (.titles).
                    row = await create_conversation(user.id, provisional_title(body.message))
                    conversation_id = str(row["id"])
                    await app[ACCOUNT].conversation(user.id, "conversation.created", row)

                looked_up = time.perf_counter()
                if timing is not None:
                    timing.span("admit", admitted, looked_up)

                def send(actor: ConversationActor) -> Awaitable[SendResult]:
                    if timing is not None:
                        timing.span("lookup", looked_up)
                    return actor.send(
                        body.message,
                        model=model,
                        tools=tools,
                        client_message_id=body.clientMessageId,
                        subscribe=subscribe,
                        slot=slot,
                        timing=timing,
                        action=action,
                        target=target,
                        attachments=sent_along,
                    )

                try:
                    try:
                        return await run_on_actor(app, conversation_id, user.id, send)
                    except ClientMessageTaken:
                        # Another process committed this key in another conversation after
                        # our lookup (the database's unique index decided): answer with that
                        # turn, a retry, which starts nothing and so holds no slot.
                        assert body.clientMessageId is not None
                        winner = await conversation_for_client_message(
                            user.id, body.clientMessageId
                        )
                        if winner is None:
                            raise
                        if slot is not None:
                            slot.release()  # the actor gave it back already: a no-op then
                        slot = None
                        return await run_on_actor(app, winner, user.id, send)
                except ConversationBusy:
                    raise busy() from None
                except (MessageNotFound, InvalidTarget, NotContinuable) as exc:
                    raise refused_target(exc) from None
            finally:
                if slot is not None:
                    slot.abandon()  # given back unless the actor took it


async def _attachments_of(
    user_id: str, conversation_id: str | None, body: ChatRequest, action: Action, target: str | None
) -> tuple[Attachment, ...]:
    """The turn's new user message's attachments, checked (the sender's, not sent in
    another conversation); ``400`` naming ``attachments`` otherwise. A ``send`` carries
    the ones it names; an ``edit`` those of its body when it names some (``[]``: none),
    else the edited message's; regenerate and continue make no user message."""
    if action == "edit" and body.attachments is None:
        if conversation_id is None or target is None:
            return ()
        return await attachments.of_message_in(conversation_id, target)
    if not body.attachments or action not in ("send", "edit"):
        return ()
    try:
        return await attachments.for_send(user_id, conversation_id, body.attachments)
    except AttachmentRefused as exc:
        raise ApiError(400, "invalid_request", str(exc), extra={"field": "attachments"}) from None


async def _model_of(conversation_id: str, message_id: str) -> str | None:
    """The model that wrote a message (a continue goes on in it)."""
    row = (
        await Message.select(Message.model)
        .where((Message.id == message_id) & (Message.conversation_id == conversation_id))
        .first()
        .run()
    )
    return str(row["model"]) if row is not None and row["model"] else None


async def switch_branch(
    app: web.Application, conversation_id: str, user_id: str, message_id: str
) -> str:
    """Make ``message_id`` part of the conversation's active path; the new active leaf."""
    refuse_while_draining(app)
    await require_redis(app)

    def switch(actor: ConversationActor) -> Awaitable[str]:
        return actor.switch(message_id)

    try:
        return await run_on_actor(app, conversation_id, user_id, switch)
    except ConversationBusy:
        raise busy() from None
    except (MessageNotFound, InvalidTarget) as exc:
        raise refused_target(exc) from None


async def cancel_generation(
    app: web.Application, conversation_id: str, user_id: str, generation_id: str | None
) -> bool:
    """Cancel without waking anything: an idle conversation has nothing to cancel."""
    if app[SETTINGS].cluster_mode:
        # The generation may run on another process: the local actor forwards the cancel.
        def cancel(actor: ConversationActor) -> Awaitable[bool]:
            return actor.cancel(generation_id)

        return await run_on_actor(app, conversation_id, user_id, cancel)
    actor = app[REGISTRY].peek(conversation_id)
    if actor is None or actor.owner_id != user_id:
        await owned_conversation(conversation_id, user_id)  # 404 unless it is the user's
        return False
    try:
        return await actor.cancel(generation_id)
    except ActorStopped:
        return False


def rebuilt_events(result: SendResult) -> list[dict[str, object]]:
    """``init`` and the terminal event of a retried turn whose events left the log.

    They are rebuilt from the stored rows, so they carry no ``epoch``/``seq``: they are
    not part of the log, and a client must not resume from them.
    """
    answer = result.answer
    base: dict[str, object] = {
        "conversationId": result.conversation_id,
        "generationId": result.generation_id,
    }
    if answer is None:
        return [{**base, "type": "error", "code": "internal", "error": "The answer was not stored"}]
    common: dict[str, object] = {**base, "messageId": answer.id}
    init: dict[str, object] = {
        **common,
        "type": "init",
        "userMessageId": result.user_message.id,
        "aiModel": answer.model,
    }
    if answer.status == "complete":
        terminal: dict[str, object] = {
            **common,
            "type": "done",
            "fullText": answer.content,
            "finishReason": answer.finish_reason or "STOP",
            "usage": answer.usage or {},
            "citations": answer.citations or [],
        }
    elif answer.status == "cancelled":
        terminal = {**common, "type": "cancelled", "fullText": answer.content}
    else:  # error, or interrupted by a server that died
        terminal = {
            **common,
            "type": "error",
            "code": "internal",
            # The fixed text of the code (docs/api.md), like every error event: the stored
            # row keeps no error code, so the rebuilt event cannot say more.
            "error": error_text("internal"),
        }
    return [init, terminal]


async def owned_conversation(conversation_id: str, user_id: str) -> dict[str, object]:
    row = (
        await Conversation.select()
        .where((Conversation.id == conversation_id) & (Conversation.user_id == user_id))
        .first()
        .run()
    )
    if row is None:
        raise not_found()
    return dict(row)


__all__ = [
    "cancel_generation",
    "lookup_actor",
    "owned_conversation",
    "rebuilt_events",
    "refuse_while_draining",
    "run_on_actor",
    "start_chat",
    "switch_branch",
]
