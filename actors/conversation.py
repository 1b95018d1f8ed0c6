"""``ConversationActor``: the single owner of one conversation.

One asyncio task with a mailbox handles the commands (:class:`Send`, :class:`Cancel`,
:class:`Subscribe`, :class:`Unsubscribe`, :class:`Stop`) in order, so devices never race
each other. It owns the conversation's context (the history cache), its log (the hub),
presence, idempotent retries and when a generation starts and stops; what a generation
does once started is :mod:`actors.generation`.

Why one module of ~690 lines: it is one state machine, the mailbox and the state only the
mailbox may touch (the context cache, the running generation); presence is
:mod:`actors.presence`, where a retried send finds its turn in the log
:mod:`actors.retries`, the generation :mod:`actors.generation`, and what is left would
only be spread across files, not made simpler.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from actors.account_feed import AnswerEvents
from actors.clock import iso
from actors.cluster_hooks import ClusterHooks
from actors.dormant import Dormant
from actors.event_log import Cursor, EventLog, Subscription
from actors.flusher import Flusher
from actors.generation import Generation, Opened, RequestBuilder, Runner, StopReason, discard
from actors.generation_timing import GenerationTiming
from actors.ids import opaque_id
from actors.mailbox import (
    Action,
    ActorStopped,
    Cancel,
    Command,
    ConversationBusy,
    MessageNotFound,
    ModelSpec,
    ResumeAt,
    Send,
    Slot,
    Stop,
    Subscribe,
    SubscribeSpec,
    Switch,
    Unsubscribe,
)
from actors.models.base import Attachment, ChatTurn, ModelProvider
from actors.presence import Presence
from actors.retries import RecentGenerations
from actors.store import ContinuedGeneration, ConversationStore, NewGeneration, StoredMessage
from actors.telemetry import GenerationTelemetry
from actors.tree import ConversationTree
from actors.turn_plan import TurnPlan, plan_turn

log = structlog.get_logger(__name__)


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
    #: Cluster mode (``cluster/``): ownership, the shared log, forwarded commands.
    cluster: ClusterHooks[ConversationActor] | None = None
    #: Model latencies and outcomes for ``/metrics`` (:mod:`actors.telemetry`).
    telemetry: GenerationTelemetry | None = None
    #: The user's account channel: each answer's start and end (:mod:`actors.account_feed`).
    account: AnswerEvents | None = None


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
    #: The log's seq just before this turn's ``message`` event (``None``: not known).
    seq_before: int | None = None
    #: The turn's clock, when the sender brought one (``answered`` is marked).
    timing: GenerationTiming | None = None


@dataclass(slots=True)
class _Envelope:
    command: Command
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
        self.hub = EventLog(conversation_id)
        self.generation: Generation | None = None
        self.stopped = False
        #: Stopped for being idle (not stop, delete or crash): its log may live on.
        self.idled = False
        self._tree: ConversationTree | None = None
        self._recent = RecentGenerations()
        self._presence = Presence(self.hub)
        self._mailbox: asyncio.Queue[_Envelope] = asyncio.Queue()
        self._current: _Envelope | None = None
        self._on_exit = on_exit
        self._on_detached = on_detached
        if dormant is not None:
            # The previous actor's log goes on: same epoch and seq, same subscribers.
            dormant.wake()
            self.hub = dormant.hub
            self._presence = dormant.presence
            self._recent = dormant.recent
            self._presence.resume()
        self._log = log.bind(conversation_id=conversation_id)
        self._runner = Runner(self.hub, deps, self._log)
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
        timing: GenerationTiming | None = None,
        action: Action = "send",
        target: str | None = None,
        attachments: tuple[Attachment, ...] = (),
    ) -> SendResult:
        """``action``/``target``: what the send does to the tree (:data:`Action`);
        ``attachments``: the new user message's (a ``send`` or an ``edit``)."""
        if timing is not None:
            timing.mark("mailed")
        result: SendResult = await self._call(
            Send(
                message,
                model,
                tools,
                client_message_id,
                subscribe,
                slot,
                timing,
                action,
                target,
                attachments,
            )
        )
        return result

    async def switch(self, message_id: str) -> str:
        """Make ``message_id`` part of the active path; returns the new active leaf."""
        leaf: str = await self._call(Switch(message_id))
        return leaf

    async def cancel(self, generation_id: str | None = None) -> bool:
        cancelled: bool = await self._call(Cancel(generation_id))
        return cancelled

    async def subscribe(self, after: str | None, spec: SubscribeSpec) -> Subscription:
        sub: Subscription = await self._call(Subscribe(after, spec))
        return sub

    async def resume_cursor(self, message_id: str) -> str | None:
        """The cursor just before the ``init`` of the generation answering in
        ``message_id`` (``None`` when the log no longer holds it). In cluster mode the
        mirror is caught up with the shared log first, as for a subscribe."""
        cursor: str | None = await self._call(ResumeAt(message_id))
        return cursor

    async def unsubscribe(self, sub: Subscription) -> None:
        if not self.stopped:
            with contextlib.suppress(ActorStopped):
                await self._call(Unsubscribe(sub))
                return
        if self._on_detached is not None:
            # Stopped while idle: the log lives on (dormant, or adopted by a new actor).
            await self._on_detached(self, sub)

    async def stop(self, reason: str = "stopped") -> None:
        if not self.stopped:
            with contextlib.suppress(ActorStopped):
                await self._call(Stop(reason))
        # asyncio.wait, not await: a crashed or cancelled actor task must not raise here.
        await asyncio.wait({self.task})

    @property
    def epoch(self) -> str:
        """The epoch of the conversation's log (what cursors into it start with)."""
        return self.hub.epoch

    @property
    def viewers(self) -> int:
        return len(self._presence)

    def dormant(self) -> Dormant:
        """After an idle stop: the log for the next actor; the context is let go of."""
        self._tree = None
        # The viewers and a pending presence announcement go with the log, unchanged.
        return Dormant(self.hub, self._presence, self._recent)

    def streaming_answer(self) -> tuple[str, str] | None:
        """A read-only snapshot for readers outside the mailbox: ``(assistant message id,
        text so far)`` of the running generation, or ``None``."""
        generation = self.generation
        if generation is None:
            # Cluster mode: the answer may stream on another process, into this log.
            return self.hub.live_answer()
        return generation.assistant.id, generation.text

    def generation_running(self) -> asyncio.Task[None] | None:
        """The running generation's task while it has not finished (``None`` otherwise):
        cluster mode gives a crashed actor's lease back only once its end is stored."""
        generation = self.generation
        if generation is None or generation.task is None or generation.task.done():
            return None
        return generation.task

    def stop_generation(self, reason: StopReason) -> None:
        """Stop the running generation's model stream now, outside the mailbox (cluster
        mode: the lease is lost, so nothing more may be written under it); its ending
        runs as for any stop."""
        if self.generation is not None:
            self.generation.request_stop(reason)

    # -- the actor loop ----------------------------------------------------------------

    async def _call(self, command: Command) -> Any:
        if self.stopped:
            raise ActorStopped(self.conversation_id)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        context = structlog.contextvars.get_contextvars()
        self._mailbox.put_nowait(_Envelope(command, reply, context))
        return await reply

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(conversation_id=self.conversation_id)
        try:
            while True:
                try:
                    envelope = await asyncio.wait_for(
                        self._mailbox.get(), timeout=self.deps.idle_timeout
                    )
                except TimeoutError:
                    if self.generation is None and self._mailbox.empty():
                        # Viewers or not: their subscriptions outlive the actor (dormant).
                        self.idled = True
                        self._log.debug("actor_idle_stop", viewers=len(self._presence))
                        return
                    continue
                reply = envelope.reply
                if reply.cancelled():
                    continue
                self._current = envelope
                command = envelope.command
                request_id = envelope.context.get("request_id")
                with structlog.contextvars.bound_contextvars(request_id=request_id):
                    try:
                        result = await self._handle(command)
                    except Exception as exc:
                        # A failed command (say, a database error) fails that command only:
                        # the actor's state is consistent after every await, and a running
                        # generation must not die with it.
                        if not reply.done():
                            reply.set_exception(exc)
                        if not isinstance(exc, ConversationBusy | LookupError | ValueError):
                            self._log.warning(
                                "command_failed",
                                command=type(command).__name__,
                                error=repr(exc)[:300],
                            )
                    else:
                        if not reply.done():
                            reply.set_result(result)
                if isinstance(command, Stop):
                    return
        finally:
            self.stopped = True
            current, self._current = self._current, None
            if current is not None and not current.reply.done():
                # The loop died inside a command: its caller is answered, never left waiting.
                current.reply.set_exception(ActorStopped(self.conversation_id))
            self._fail_mailbox()
            if self._on_exit is not None:
                self._on_exit(self)

    def _fail_mailbox(self) -> None:
        while not self._mailbox.empty():
            envelope = self._mailbox.get_nowait()
            if not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(self.conversation_id))

    async def _handle(self, command: Command) -> Any:
        cluster = self.deps.cluster
        if cluster is not None and isinstance(
            command, Send | Cancel | Switch | Subscribe | ResumeAt
        ):
            # Cluster mode: a send or cancel runs here only while this process owns the
            # conversation (else it is forwarded to the owner); a subscribe reads the
            # shared log first.
            handled, result = await cluster.intercept(self, command)
            if handled:
                return result
        match command:
            case Send(timing=timing):
                if timing is not None:
                    timing.since("mailbox", "mailed")
                return await self._send_holding(command)
            case Cancel(generation_id):
                return await self._cancel(generation_id)
            case Switch(message_id):
                return await self._switch(message_id)
            case Subscribe(after, spec):
                return self._subscribe(after, spec)
            case ResumeAt(message_id):
                return self.hub.resume_cursor(message_id)
            case Unsubscribe(sub):
                self._unsubscribe(sub)
                return None
            case Stop(reason):
                await self._shutdown(reason)
                return None

    # -- subscriptions and presence ------------------------------------------------------

    def forget_history(self) -> None:
        """Cluster mode: turns were added by another process; reload the context."""
        self._tree = None

    def subscribe_now(self, after: str | Cursor | None, spec: SubscribeSpec) -> Subscription:
        """Subscribe from inside a command (cluster mode's forwarded send)."""
        return self._subscribe(after, spec)

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
            self._presence.add(sub, announce=announce)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)
        self._presence.discard(sub)

    # -- send ----------------------------------------------------------------------------

    async def _tree_cache(self) -> ConversationTree:
        if self._tree is None:
            store = self.deps.store
            messages = await store.history(self.conversation_id)
            # A new conversation has no leaf to ask for (one read less per first send).
            leaf = await store.active_leaf(self.conversation_id) if messages else None
            self._tree = ConversationTree(messages, leaf)
        return self._tree

    async def _send(
        self,
        message: str,
        model: ModelSpec,
        tools: tuple[str, ...],
        client_message_id: str | None,
        subscribe: SubscribeSpec | None,
        timing: GenerationTiming | None = None,
        action: Action = "send",
        target: str | None = None,
        attachments: tuple[Attachment, ...] = (),
    ) -> SendResult:
        if client_message_id is not None:
            retried = await self._retry(client_message_id, subscribe)
            if retried is not None:
                return retried
        if self.generation is not None:
            raise ConversationBusy(self.conversation_id)
        loading = time.perf_counter()
        tree = await self._tree_cache()
        if timing is not None:
            timing.span("history", loading)
        plan = plan_turn(tree, action, target, message)
        generation_id = opaque_id()
        # The model request goes out while the turn is committed: the upstream's latency
        # overlaps the database's. Nothing is published before the commit, and tokens
        # only after `init`; the first event just waits in `opening`.
        turns = [
            ChatTurn(role=m.role, content=m.content, attachments=m.attachments)
            for m in plan.context
            if m.content
        ]
        if plan.answers is not None:
            turns.append(
                ChatTurn(
                    role="user", content=plan.answers.content, attachments=plan.answers.attachments
                )
            )
        elif plan.continued is None:
            turns.append(ChatTurn(role="user", content=message, attachments=attachments))
        else:
            turns.append(ChatTurn(role="assistant", content=plan.continued.content))
        loop = asyncio.get_running_loop()
        committing = time.perf_counter()
        # One transaction for both rows: the user message is committed before anything
        # is published, and the answer row exists (`streaming`) from the start. The
        # commit is queued first (one turn of the loop), so that the writer sends it
        # before the model request is built: a database that takes a while to sync
        # (PostgreSQL's WAL flush) does so while the request is built and sent.
        commit = loop.create_task(
            self._commit_turn(plan, message, generation_id, client_message_id, model, attachments)
        )
        opening: asyncio.Task[Opened] | None = None
        try:
            await asyncio.sleep(0)
            opening = loop.create_task(
                self._runner.open(self.deps.providers[model.provider], model, tools, turns, timing)
            )
            user_message, assistant = await commit
        except BaseException:
            commit.cancel()
            await asyncio.wait({commit})
            if opening is not None:
                await discard(opening)
            raise
        if timing is not None:
            committed = timing.span("turn_commit", committing)
            timing.marks["committed"] = committed
            opened = timing.marks.get("opened")
            timing.span("commit_wait", committed if opened is None else opened, committed)
        new_user = plan.answers is None and plan.continued is None
        if new_user:
            tree.add(user_message)
        tree.add(assistant)  # the active leaf; its text and status follow the generation
        before = self.hub.last_seq
        subscription = None
        if subscribe is not None:
            # Silent here: the stream starts with this send's `message` event (or its
            # `init`); the new viewer is announced after `init`.
            subscription = self._subscribe(None, subscribe, announce=False)
        self._recent.remember(generation_id, before)
        if new_user:
            self.hub.append(
                "message",
                {
                    "message": {
                        "id": user_message.id,
                        "role": "user",
                        "content": user_message.content,
                        "createdAt": iso(user_message.created_at),
                        "clientMessageId": client_message_id,
                        "parentId": user_message.parent_id,
                        **(
                            {"attachments": [a.as_json() for a in user_message.attachments]}
                            if user_message.attachments
                            else {}
                        ),
                    }
                },
            )
        prefix = plan.continued.content if plan.continued is not None else ""
        generation = Generation(
            id=generation_id,
            user_message=user_message,
            assistant=assistant,
            model=model.id,
            tools=tools,
            opening=opening,
            timing=timing,
            parts=[prefix] if prefix else [],
        )
        self.generation = generation
        self.hub.append(
            "init",
            {
                "messageId": assistant.id,
                "userMessageId": user_message.id,
                "generationId": generation_id,
                "aiModel": model.id,
                "action": action,
            },
        )
        if prefix:
            # A continue: the first token is the text so far, so the generation's tokens
            # add up to the stored message (docs/api.md, Branches).
            self.hub.append("token", {"messageId": assistant.id, "text": prefix})
        if subscription is not None and subscribe is not None and subscribe.viewer:
            self._presence.announce()
        account = self.deps.account
        if account is not None:
            account.answer_started(self.owner_id, self.conversation_id, assistant.id, generation_id)
        self._runner.live = generation
        self._runner.publish_first(generation)
        generation.task = asyncio.get_running_loop().create_task(
            self._runner.run(generation, self._concluded), name=f"generation:{generation_id}"
        )
        if timing is not None:
            timing.since("publish", "committed", timing.mark("answered"))
        return SendResult(
            conversation_id=self.conversation_id,
            generation_id=generation_id,
            user_message=user_message,
            assistant_message_id=assistant.id,
            model=model.id,
            subscription=subscription,
            actor=self,
            seq_before=before,
            timing=timing,
        )

    async def _send_holding(self, command: Send) -> SendResult:
        """``_send`` with the sender's generation slot: the actor's from here on."""
        slot = command.slot
        args = (
            command.message,
            command.model,
            command.tools,
            command.client_message_id,
            command.subscribe,
            command.timing,
            command.action,
            command.target,
            command.attachments,
        )
        if slot is None:
            return await self._send(*args)
        slot.adopt()
        try:
            result = await self._send(*args)
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

    async def _retry(
        self, client_message_id: str, subscribe: SubscribeSpec | None
    ) -> SendResult | None:
        """A retried send: never a second message or generation, never ``409``."""
        found = await self.deps.store.find_client_message(self.conversation_id, client_message_id)
        if found is None:
            return None
        user_message, answer = found
        # The answer's generation (a regenerate's or continue's differs from its user
        # message's).
        generation_id = (answer.generation_id if answer is not None else None) or (
            user_message.generation_id or ""
        )
        running = self.generation is not None and self.generation.id == generation_id
        subscription = None
        if subscribe is not None:
            cursor = self._recent.replay_cursor(self.hub, generation_id, running=running)
            if cursor is not None:
                subscription = self._subscribe(cursor, subscribe)
            elif running:
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
            seq_before=self._recent.seq_before(generation_id),
        )

    # -- cancel --------------------------------------------------------------------------

    async def _cancel(self, generation_id: str | None) -> bool:
        generation = self.generation
        if generation is None or generation.stopped or generation.concluding:
            return False  # nothing running, or its outcome is already fixed
        if generation_id is not None and generation_id != generation.id:
            return False  # a stale cancel never stops the next generation
        generation.request_stop(StopReason.CANCELLED)
        if generation.task is not None:
            # The terminal state is committed and `cancelled` published before we answer.
            await asyncio.shield(generation.task)
        return True

    # -- the generation ------------------------------------------------------------------

    def _concluded(self, generation: Generation) -> None:
        """The outcome is stored (the answer, in the tree since its start, has its final
        text and status): the next send may start."""
        if self.generation is generation:
            self.generation = None
        account = self.deps.account
        if account is not None:
            answer = generation.assistant
            account.answer_ended(
                self.owner_id, self.conversation_id, answer.id, generation.id, answer.status
            )

    # -- branches ------------------------------------------------------------------------

    async def _commit_turn(
        self,
        plan: TurnPlan,
        message: str,
        generation_id: str,
        client_message_id: str | None,
        model: ModelSpec,
        attachments: tuple[Attachment, ...] = (),
    ) -> tuple[StoredMessage, StoredMessage]:
        store = self.deps.store
        continued = plan.continued
        if continued is None:
            return await store.start_generation(
                NewGeneration(
                    self.conversation_id,
                    message,
                    generation_id,
                    client_message_id,
                    model.id,
                    parent_id=plan.parent_id,
                    answers=plan.answers,
                    attachments=attachments if plan.answers is None else (),
                )
            )
        await store.continue_generation(
            ContinuedGeneration(
                self.conversation_id, continued.id, generation_id, client_message_id, model.id
            )
        )
        assert plan.answers is None and plan.user is not None
        continued.status = "streaming"
        continued.generation_id = generation_id
        continued.model = model.id
        continued.finish_reason = None
        if client_message_id is not None:
            continued.client_message_id = client_message_id
        return plan.user, continued

    async def _switch(self, message_id: str) -> str:
        """The active path goes through ``message_id`` (stored, then announced)."""
        if self.generation is not None:
            raise ConversationBusy(self.conversation_id)
        tree = await self._tree_cache()
        if message_id not in tree:
            raise MessageNotFound(message_id)
        leaf = tree.descend(message_id)
        if leaf == tree.leaf:
            return leaf
        await self.deps.store.set_active_leaf(self.conversation_id, leaf)
        tree.leaf = leaf
        self.hub.append("branch", {"activeLeafId": leaf, "messageId": message_id})
        return leaf

    # -- stop ----------------------------------------------------------------------------

    async def _shutdown(self, reason: str) -> None:
        generation = self.generation
        if generation is not None:
            generation.request_stop(
                StopReason.CANCELLED if reason == "deleted" else StopReason.SHUTDOWN
            )
            if generation.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(generation.task)
        self.hub.close()
        self._presence.clear()

    async def crashed(self) -> None:
        """Called by the registry when the actor loop died: leave nothing wedged.

        A running generation is stopped through its normal ending, so the row is stored
        ``error`` and ``error`` is published exactly once, after the write.
        """
        generation = self.generation
        if generation is not None and generation.task is not None:
            generation.request_stop(StopReason.CRASHED)
            with contextlib.suppress(Exception):
                await asyncio.shield(generation.task)
        if not self.hub.closed:
            self.hub.close()


__all__ = [
    "ActorDeps",
    "ConversationActor",
    "SendResult",
]
