"""``ConversationActor``: the single owner of one conversation.

One asyncio task with a mailbox handles ``send``, ``cancel``, ``subscribe``,
``unsubscribe`` and ``stop`` in order, so devices never race each other. A generation runs
as a child task of the actor: it streams the model, appends ``token`` events to the hub,
lets the process's flusher write the partial answer in batches (never per token), commits
the terminal state and only then publishes ``done`` / ``error`` / ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from actors.clock import iso
from actors.dormant import Dormant
from actors.flusher import Flusher
from actors.hub import Cursor, Event, Hub, Subscription
from actors.models.base import (
    ChatTurn,
    Final,
    ModelError,
    ModelEvent,
    ModelProvider,
    ModelRequest,
    TextDelta,
    ToolStep,
)
from actors.store import ConversationStore, Outcome, StoredMessage

log = structlog.get_logger(__name__)

#: Generations remembered for idempotent retries (their cursor in the log).
RECENT_GENERATIONS = 32
#: Tokens published back to back before the generation yields to the event loop.
YIELD_EVERY = 32
#: Presence changes within this window are published as one event (N viewers joining
#: would otherwise cost N presence events to each of N subscribers).
PRESENCE_DEBOUNCE_S = 0.25


class ModelSpec(Protocol):
    """What the actor needs to know of a catalog entry."""

    @property
    def id(self) -> str: ...

    @property
    def provider(self) -> str: ...


class RequestBuilder(Protocol):
    async def __call__(
        self,
        *,
        history: Sequence[ChatTurn],
        model: Any,
        tools: tuple[str, ...] = (),
        provider: ModelProvider | None = None,
    ) -> ModelRequest: ...


class Slot(Protocol):
    """A unit of a per-user budget (concurrent generations) that a send holds.

    Taken by the server before the send; the actor adopts it as it handles the send and
    releases it exactly once: at once when the send starts no generation, else when the
    generation's task is done, however it ends.
    """

    def adopt(self) -> None: ...

    def release(self) -> None: ...


class ConversationBusy(Exception):
    """A generation is already running (``409 conversation_busy``)."""


class ActorStopped(Exception):
    """The actor stopped before it could take the command; the registry respawns it."""


@dataclass(slots=True)
class ActorDeps:
    store: ConversationStore
    providers: Mapping[str, ModelProvider]
    build_request: RequestBuilder
    flusher: Flusher
    idle_timeout: float = 60.0
    on_token: Callable[[int], None] | None = None  # metrics hook: tokens published
    #: How long a terminal state is retried before the generation ends as ``error`` and
    #: the write is left to the store's janitor (``CERO_DB_COMMIT_TIMEOUT``).
    commit_timeout: float = 30.0


@dataclass(slots=True)
class SubscribeSpec:
    """How a transport wants to receive events (see :meth:`actors.hub.Hub.subscribe`)."""

    notify: Callable[[], None]
    direct: Callable[[Event], bool] | None = None
    max_events: int | None = None
    max_bytes: int | None = None
    viewer: bool = True  # counts in ``presence``


@dataclass(slots=True)
class SendResult:
    conversation_id: str
    generation_id: str
    user_message: StoredMessage
    assistant_message_id: str | None
    model: str
    #: Subscribed from just before this send's ``message`` event, when asked and the log
    #: still holds that generation; ``None`` for a retry whose events are gone.
    subscription: Subscription | None = None
    #: For a retried send whose generation has finished: the stored answer.
    answer: StoredMessage | None = None
    retried: bool = False
    #: The actor that took the send: unsubscribe ``subscription`` through it.
    actor: ConversationActor | None = None


@dataclass(slots=True)
class _Generation:
    id: str
    user_message: StoredMessage
    assistant: StoredMessage
    model: str
    tools: tuple[str, ...]
    parts: list[str] = field(default_factory=list)
    tool_steps: list[dict[str, object]] = field(default_factory=list)
    dirty: bool = False
    cancel_requested: bool = False
    shutdown: bool = False
    crashed: bool = False  # the actor loop died under it (see ConversationActor.crashed)
    concluding: bool = False  # the outcome is fixed: a cancel now is too late
    opening: asyncio.Task[_Opened] | None = None
    consume: asyncio.Task[Final | None] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def message_id(self) -> str:
        return self.assistant.id


@dataclass(slots=True)
class _Command:
    kind: str
    args: dict[str, Any]
    reply: asyncio.Future[Any]
    context: dict[str, Any]


class ConversationActor:
    def __init__(
        self,
        conversation_id: str,
        owner_id: str,
        deps: ActorDeps,
        *,
        on_exit: Callable[[ConversationActor], None] | None = None,
        dormant: Dormant | None = None,
        on_detached: Callable[[ConversationActor, Subscription], Awaitable[None]] | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.owner_id = owner_id
        self.deps = deps
        self.hub = Hub(conversation_id)
        self.generation: _Generation | None = None
        self.stopped = False
        #: Stopped for being idle (not stop, delete or crash): its log may live on.
        self.idled = False
        self._history: list[StoredMessage] | None = None
        self._recent: OrderedDict[str, int] = OrderedDict()  # generation id → seq before
        self._viewers: set[Subscription] = set()
        self._presence_timer: asyncio.TimerHandle | None = None
        self._published_viewers = 0
        self._mailbox: asyncio.Queue[_Command] = asyncio.Queue()
        self._on_exit = on_exit
        self._on_detached = on_detached
        if dormant is not None:
            # The previous actor's log goes on: same epoch and seq, same subscribers.
            dormant.wake()
            self.hub = dormant.hub
            self._viewers = dormant.viewers
            self._published_viewers = dormant.published
            self._recent = dormant.recent
            if len(self._viewers) != self._published_viewers:
                self._presence()
        self._log = log.bind(conversation_id=conversation_id)
        # A fresh context: the actor must not inherit the spawning request's log bindings.
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"actor:{conversation_id}", context=contextvars.Context()
        )

    # -- public API: each call is a command through the mailbox ------------------------

    async def send(
        self,
        message: str,
        *,
        model: ModelSpec,
        tools: tuple[str, ...] = (),
        client_message_id: str | None = None,
        subscribe: SubscribeSpec | None = None,
        slot: Slot | None = None,
    ) -> SendResult:
        result: SendResult = await self._call(
            "send",
            message=message,
            model=model,
            tools=tools,
            client_message_id=client_message_id,
            subscribe=subscribe,
            slot=slot,
        )
        return result

    async def cancel(self, generation_id: str | None = None) -> bool:
        cancelled: bool = await self._call("cancel", generation_id=generation_id)
        return cancelled

    async def subscribe(self, after: str | None, spec: SubscribeSpec) -> Subscription:
        sub: Subscription = await self._call("subscribe", after=after, spec=spec)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if not self.stopped:
            with contextlib.suppress(ActorStopped):
                await self._call("unsubscribe", sub=sub)
                return
        if self._on_detached is not None:
            # Stopped while idle: the log lives on (dormant, or adopted by a new actor).
            await self._on_detached(self, sub)

    async def stop(self, reason: str = "stopped") -> None:
        if not self.stopped:
            with contextlib.suppress(ActorStopped):
                await self._call("stop", reason=reason)
        # asyncio.wait, not await: a crashed or cancelled actor task must not raise here.
        await asyncio.wait({self.task})

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def dormant(self) -> Dormant:
        """After an idle stop: the log for the next actor; the context is let go of."""
        pending = self._presence_timer is not None
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        self._history = None
        record = Dormant(
            self.hub,
            self._viewers,
            self._published_viewers,
            self._recent,
            debounce=PRESENCE_DEBOUNCE_S,
        )
        if pending:
            record.presence()
        return record

    def streaming_answer(self) -> tuple[str, str] | None:
        """A read-only snapshot for readers outside the mailbox: ``(assistant message id,
        text so far)`` of the running generation, or ``None``."""
        generation = self.generation
        if generation is None:
            return None
        return generation.assistant.id, generation.text

    # -- the actor loop ----------------------------------------------------------------

    async def _call(self, kind: str, **args: Any) -> Any:
        if self.stopped:
            raise ActorStopped(self.conversation_id)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        context = structlog.contextvars.get_contextvars()
        self._mailbox.put_nowait(_Command(kind, args, reply, context))
        return await reply

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(conversation_id=self.conversation_id)
        try:
            while True:
                try:
                    command = await asyncio.wait_for(
                        self._mailbox.get(), timeout=self.deps.idle_timeout
                    )
                except TimeoutError:
                    if self.generation is None and self._mailbox.empty():
                        # Viewers or not: their subscriptions outlive the actor (dormant).
                        self.idled = True
                        self._log.debug("actor_idle_stop", viewers=len(self._viewers))
                        return
                    continue
                if command.reply.cancelled():
                    continue
                request_id = command.context.get("request_id")
                with structlog.contextvars.bound_contextvars(request_id=request_id):
                    try:
                        result = await self._handle(command)
                    except Exception as exc:
                        # A failed command (say, a database error) fails that command only:
                        # the actor's state is consistent after every await, and a running
                        # generation must not die with it.
                        if not command.reply.done():
                            command.reply.set_exception(exc)
                        if not isinstance(exc, ConversationBusy | LookupError | ValueError):
                            self._log.warning(
                                "command_failed", command=command.kind, error=repr(exc)[:300]
                            )
                    else:
                        if not command.reply.done():
                            command.reply.set_result(result)
                if command.kind == "stop":
                    return
        finally:
            self.stopped = True
            self._fail_mailbox()
            if self._on_exit is not None:
                self._on_exit(self)

    def _fail_mailbox(self) -> None:
        while not self._mailbox.empty():
            command = self._mailbox.get_nowait()
            if not command.reply.done():
                command.reply.set_exception(ActorStopped(self.conversation_id))

    async def _handle(self, command: _Command) -> Any:
        args = command.args
        if command.kind == "send":
            return await self._send_holding(**args)
        if command.kind == "cancel":
            return await self._cancel(args["generation_id"])
        if command.kind == "subscribe":
            return self._subscribe(args["after"], args["spec"])
        if command.kind == "unsubscribe":
            self._unsubscribe(args["sub"])
            return None
        if command.kind == "stop":
            await self._shutdown(args["reason"])
            return None
        raise ValueError(f"unknown command {command.kind}")

    # -- subscriptions and presence ------------------------------------------------------

    def _subscribe(
        self, after: str | Cursor | None, spec: SubscribeSpec, *, announce: bool = True
    ) -> Subscription:
        sub = self.hub.subscribe(
            after,
            notify=spec.notify,
            direct=spec.direct,
            max_events=spec.max_events,
            max_bytes=spec.max_bytes,
        )
        if spec.viewer:
            self._viewers.add(sub)
            if announce:
                self._presence()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)
        if sub in self._viewers:
            self._viewers.discard(sub)
            self._presence()

    def _presence(self) -> None:
        """Announce the viewer count soon, once per burst of joins and leaves."""
        if self._presence_timer is None:
            self._presence_timer = asyncio.get_running_loop().call_later(
                PRESENCE_DEBOUNCE_S, self._publish_presence
            )

    def _publish_presence(self) -> None:
        self._presence_timer = None
        viewers = len(self._viewers)
        if viewers != self._published_viewers and not self.hub.closed:
            self._published_viewers = viewers
            self.hub.append("presence", {"viewers": viewers})

    # -- send ----------------------------------------------------------------------------

    async def _history_cache(self) -> list[StoredMessage]:
        if self._history is None:
            self._history = await self.deps.store.history(self.conversation_id)
        return self._history

    async def _send(
        self,
        message: str,
        model: ModelSpec,
        tools: tuple[str, ...],
        client_message_id: str | None,
        subscribe: SubscribeSpec | None,
    ) -> SendResult:
        if client_message_id is not None:
            retried = await self._retry(client_message_id, subscribe)
            if retried is not None:
                return retried
        if self.generation is not None:
            raise ConversationBusy(self.conversation_id)
        history = await self._history_cache()
        generation_id = secrets.token_urlsafe(18)
        # The model request goes out while the turn is committed: the upstream's latency
        # overlaps the database's. Nothing is published before the commit, and tokens
        # only after `init`; the first event just waits in `opening`.
        turns = [ChatTurn(role=m.role, content=m.content) for m in history if m.content]
        turns.append(ChatTurn(role="user", content=message))
        opening = asyncio.get_running_loop().create_task(
            self._open(self.deps.providers[model.provider], model, tools, turns)
        )
        try:
            # One transaction for both rows: the user message is committed before
            # anything is published, and the answer row exists (`streaming`) from the start.
            user_message, assistant = await self.deps.store.start_turn(
                self.conversation_id,
                message,
                generation_id=generation_id,
                client_message_id=client_message_id,
                model=model.id,
            )
        except BaseException:
            await _discard(opening)
            raise
        history.append(user_message)
        before = self.hub.last_seq
        subscription = None
        if subscribe is not None:
            # Silent here: the stream starts with this send's `message` event; the new
            # viewer is announced after `init`.
            subscription = self._subscribe(None, subscribe, announce=False)
        self._remember(generation_id, before)
        self.hub.append(
            "message",
            {
                "message": {
                    "id": user_message.id,
                    "role": "user",
                    "content": user_message.content,
                    "createdAt": iso(user_message.created_at),
                    "clientMessageId": client_message_id,
                }
            },
        )
        generation = _Generation(
            id=generation_id,
            user_message=user_message,
            assistant=assistant,
            model=model.id,
            tools=tools,
            opening=opening,
        )
        self.generation = generation
        self.hub.append(
            "init",
            {
                "messageId": assistant.id,
                "userMessageId": user_message.id,
                "generationId": generation_id,
                "aiModel": model.id,
            },
        )
        if subscription is not None and subscribe is not None and subscribe.viewer:
            self._presence()
        generation.task = asyncio.get_running_loop().create_task(
            self._generate(generation, model), name=f"generation:{generation_id}"
        )
        return SendResult(
            conversation_id=self.conversation_id,
            generation_id=generation_id,
            user_message=user_message,
            assistant_message_id=assistant.id,
            model=model.id,
            subscription=subscription,
            actor=self,
        )

    async def _send_holding(self, slot: Slot | None = None, **args: Any) -> SendResult:
        """``_send`` with the sender's generation slot: the actor's from here on."""
        if slot is None:
            return await self._send(**args)
        slot.adopt()
        try:
            result = await self._send(**args)
        except BaseException:
            slot.release()
            raise
        generation = self.generation
        if (
            result.retried
            or generation is None
            or generation.id != result.generation_id
            or generation.task is None
        ):
            slot.release()
        else:
            # Done, error, cancel, shutdown or crash: every ending finishes the task.
            generation.task.add_done_callback(lambda _task: slot.release())
        return result

    def _remember(self, generation_id: str, seq_before: int) -> None:
        self._recent[generation_id] = seq_before
        while len(self._recent) > RECENT_GENERATIONS:
            self._recent.popitem(last=False)

    async def _retry(
        self, client_message_id: str, subscribe: SubscribeSpec | None
    ) -> SendResult | None:
        """A retried send: never a second message or generation, never ``409``."""
        found = await self.deps.store.find_client_message(self.conversation_id, client_message_id)
        if found is None:
            return None
        user_message, answer = found
        generation_id = user_message.generation_id or ""
        running = self.generation is not None and self.generation.id == generation_id
        subscription = None
        seq_before = self._recent.get(generation_id)
        if subscribe is not None and seq_before is not None:
            cursor = Cursor(self.hub.epoch, seq_before)
            replay = self.hub.replay(cursor)
            if replay is not None and (running or any(e.type in TERMINAL for e in replay)):
                subscription = self._subscribe(cursor, subscribe)
        if running and subscription is None and subscribe is not None:
            # The log lost the start (cannot happen while the buffer holds the current
            # generation); follow it live rather than fail.
            subscription = self._subscribe(None, subscribe)
        if answer is not None and answer.status == "streaming" and not running:
            answer.status = "interrupted"
        return SendResult(
            conversation_id=self.conversation_id,
            generation_id=generation_id,
            user_message=user_message,
            assistant_message_id=answer.id if answer else None,
            model=answer.model if answer and answer.model else "",
            subscription=subscription,
            answer=None if running else answer,
            retried=True,
            actor=self,
        )

    # -- cancel --------------------------------------------------------------------------

    async def _cancel(self, generation_id: str | None) -> bool:
        generation = self.generation
        if generation is None or generation.cancel_requested or generation.concluding:
            return False  # nothing running, or its outcome is already fixed
        if generation_id is not None and generation_id != generation.id:
            return False  # a stale cancel never stops the next generation
        generation.cancel_requested = True
        if generation.consume is not None:
            generation.consume.cancel()
        if generation.task is not None:
            # The terminal state is committed and `cancelled` published before we answer.
            await asyncio.shield(generation.task)
        return True

    # -- the generation ------------------------------------------------------------------

    async def _generate(self, generation: _Generation, model: ModelSpec) -> None:
        store = self.deps.store
        self.deps.flusher.track(generation)
        final: Final | None = None
        error: ModelError | None = None
        crashed = False
        try:
            generation.consume = asyncio.get_running_loop().create_task(self._consume(generation))
            if generation.cancel_requested or generation.shutdown or generation.crashed:
                generation.consume.cancel()  # stopped before this task first ran
            try:
                final = await generation.consume
            except asyncio.CancelledError:
                if not (generation.cancel_requested or generation.shutdown or generation.crashed):
                    raise
            except ModelError as exc:
                error = exc
            except Exception:
                self._log.exception("generation_crashed", generation_id=generation.id)
                crashed = True
        finally:
            self.deps.flusher.untrack(generation)
        await self._conclude(generation, final, error, crashed, store)

    async def _conclude(
        self,
        generation: _Generation,
        final: Final | None,
        error: ModelError | None,
        crashed: bool,
        store: ConversationStore,
    ) -> None:
        generation.concluding = True
        text = generation.text
        tools = generation.tool_steps or None
        common: dict[str, object] = {
            "messageId": generation.assistant.id,
            "generationId": generation.id,
        }
        event: tuple[str, dict[str, object]]
        if generation.crashed:
            outcome = Outcome(status="error", content=text, tools=tools)
            event = (
                "error",
                {**common, "code": "internal", "error": "The conversation actor failed"},
            )
        elif generation.shutdown:
            outcome = Outcome(status="interrupted", content=text, tools=tools)
            event = (
                "error",
                {**common, "code": "server_shutdown", "error": "The server is shutting down"},
            )
        elif generation.cancel_requested:
            outcome = Outcome(status="cancelled", content=text, tools=tools)
            event = ("cancelled", common)
        elif error is not None or crashed or final is None:
            code = error.code if error is not None else "internal"
            message = error.message if error is not None else "The generation failed"
            outcome = Outcome(status="error", content=text, tools=tools)
            event = ("error", {**common, "code": code, "error": message})
        else:
            usage = final.usage.as_json()
            citations = [c.as_json() for c in final.citations]
            outcome = Outcome(
                status="complete",
                content=text,
                finish_reason=final.finish_reason,
                usage=usage,
                citations=citations,
                tools=tools,
            )
            event = (
                "done",
                {
                    **common,
                    "fullText": text,
                    "finishReason": final.finish_reason,
                    "usage": usage,
                    "citations": citations,
                },
            )
        if not await self._store_outcome(generation, outcome):
            event = ("error", {**common, "code": "internal", "error": "could not store the answer"})
            # Stored as `error` with the text it has, as soon as the database takes it.
            store.finish_later(generation.assistant.id, replace(outcome, status="error"))
        assistant = generation.assistant
        assistant.content = text
        assistant.status = outcome.status
        if self._history is not None:
            self._history.append(assistant)
        if self.generation is generation:
            self.generation = None
        self.hub.append(*event)
        self._log.info(
            "generation_finished",
            generation_id=generation.id,
            outcome=outcome.status,
            chars=len(text),
        )

    async def _store_outcome(self, generation: _Generation, outcome: Outcome) -> bool:
        """Commit the terminal state, retrying with backoff for ``commit_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deps.commit_timeout
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.deps.store.finish(generation.assistant.id, outcome)
                return True
            except Exception as exc:
                if loop.time() + delay >= deadline:
                    self._log.error(
                        "finish_failed",
                        generation_id=generation.id,
                        attempts=attempt,
                        error=repr(exc)[:300],
                    )
                    return False
                self._log.warning(
                    "finish_retry",
                    generation_id=generation.id,
                    attempt=attempt,
                    error=repr(exc)[:300],
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _open(
        self,
        provider: ModelProvider,
        model: ModelSpec,
        tools: tuple[str, ...],
        turns: list[ChatTurn],
    ) -> _Opened:
        """Build the request, start the stream and wait for its first event."""
        request = await self.deps.build_request(
            history=turns, model=model, tools=tools, provider=provider
        )
        stream = provider.stream(request)
        try:
            first = await anext(aiter(stream))
        except StopAsyncIteration:
            return _Opened(stream, None)
        except BaseException:
            await _aclose(stream)
            raise
        return _Opened(stream, first)

    async def _consume(self, generation: _Generation) -> Final | None:
        assert generation.opening is not None
        try:
            opened = await generation.opening
        except asyncio.CancelledError:
            await _discard(generation.opening)
            raise
        hub = self.hub
        message_id = generation.assistant.id
        on_token = self.deps.on_token
        final: Final | None = None
        stream = opened.stream
        unyielded = 0
        try:
            async for item in _chain(opened.first, stream):
                if isinstance(item, TextDelta):
                    if not item.text:
                        continue
                    generation.parts.append(item.text)
                    generation.dirty = True
                    hub.append("token", {"messageId": message_id, "text": item.text})
                    if on_token is not None:
                        on_token(1)
                    unyielded += 1
                    if unyielded >= YIELD_EVERY:
                        # A provider that has chunks buffered never suspends: let commands
                        # (cancel), lagging subscribers' pumps and other actors run.
                        unyielded = 0
                        await asyncio.sleep(0)
                elif isinstance(item, ToolStep):
                    step: dict[str, object] = {"tool": item.tool, "payload": item.payload}
                    generation.tool_steps.append(step)
                    hub.append("tool", {"messageId": message_id, **step})
                elif isinstance(item, Final):
                    final = item
        finally:
            await _aclose(stream)
        return final

    # -- stop ----------------------------------------------------------------------------

    async def _shutdown(self, reason: str) -> None:
        generation = self.generation
        if generation is not None:
            if reason == "deleted":
                generation.cancel_requested = True
            else:
                generation.shutdown = True
            if generation.consume is not None:
                generation.consume.cancel()
            if generation.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(generation.task)
        self.hub.close()
        self._viewers.clear()

    async def crashed(self) -> None:
        """Called by the registry when the actor loop died: leave nothing wedged.

        A running generation is stopped through its normal ending, so the row is stored
        ``error`` and ``error`` is published exactly once, after the write.
        """
        generation = self.generation
        if generation is not None and generation.task is not None:
            generation.crashed = True
            if generation.consume is not None:
                generation.consume.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(generation.task)
        if not self.hub.closed:
            self.hub.close()


TERMINAL = frozenset({"done", "error", "cancelled"})


@dataclass(slots=True)
class _Opened:
    """A model stream whose first event has arrived (``None``: it ended at once)."""

    stream: AsyncIterator[ModelEvent]
    first: ModelEvent | None


async def _chain(
    first: ModelEvent | None, rest: AsyncIterator[ModelEvent]
) -> AsyncIterator[ModelEvent]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def _aclose(stream: AsyncIterator[ModelEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _discard(opening: asyncio.Task[_Opened]) -> None:
    """Stop an opening stream that will not be consumed, and close it if it opened."""
    if not opening.done():
        opening.cancel()
        await asyncio.wait({opening})
    if not opening.cancelled() and opening.exception() is None:
        await _aclose(opening.result().stream)
