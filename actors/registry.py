"""Spawns, finds and supervises conversation actors: one per conversation id.

An actor is spawned on first use and stops itself after an idle timeout (no generation),
subscribed viewers or not. While anyone still subscribes, its log stays here as a
:class:`~actors.dormant.Dormant` record (no task, no context) that the next actor of the
conversation adopts, so subscriptions survive without holding an actor. If its loop
crashes, the registry publishes ``error``, marks the streaming row ``error`` and forgets
it, so the next use spawns a fresh one: nothing stays wedged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from actors.conversation import ActorDeps, ConversationActor
from actors.dormant import Dormant
from actors.event_log import Subscription
from actors.mailbox import ActorStopped

log = structlog.get_logger(__name__)


class ConversationNotFound(LookupError):
    """No such conversation, or it belongs to someone else (both answer 404)."""


class Registry:
    def __init__(self, deps: ActorDeps) -> None:
        self.deps = deps
        self._actors: dict[str, ConversationActor] = {}
        self._dormant: dict[str, Dormant] = {}
        #: Spawns run in their own task: a caller that goes away cancels only its wait.
        self._spawning: dict[str, asyncio.Task[ConversationActor]] = {}
        #: Spawns overtaken by a delete: they must not register an actor when they end.
        self._doomed: set[asyncio.Task[ConversationActor]] = set()
        self._closing = False
        #: SIGTERM: no new generation starts; running ones may finish (``drain``).
        self.draining = False
        self._deleting: set[str] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self.crashes = 0

    def __len__(self) -> int:
        return len(self._actors)

    def peek_dormant(self, conversation_id: str) -> Dormant | None:
        return self._dormant.get(conversation_id)

    @property
    def dormant_count(self) -> int:
        """Conversations subscribed to without a live actor."""
        return len(self._dormant)

    def peek(self, conversation_id: str) -> ConversationActor | None:
        actor = self._actors.get(conversation_id)
        return None if actor is None or actor.stopped else actor

    async def get_or_spawn(self, conversation_id: str, user_id: str) -> ConversationActor:
        """The live actor of a conversation the user owns; spawn it when needed."""
        if self._closing:
            raise ActorStopped(conversation_id)
        if conversation_id in self._deleting:
            raise ConversationNotFound(conversation_id)
        actor = self.peek(conversation_id)
        if actor is None:
            pending = self._spawning.get(conversation_id)
            if pending is None:
                pending = asyncio.get_running_loop().create_task(
                    self._spawn(conversation_id), name=f"spawn:{conversation_id}"
                )
                self._spawning[conversation_id] = pending
                pending.add_done_callback(lambda t: self._spawned(conversation_id, t))
            actor = await asyncio.shield(pending)
        if actor.owner_id != user_id:
            raise ConversationNotFound(conversation_id)
        return actor

    def _spawned(self, conversation_id: str, task: asyncio.Task[ConversationActor]) -> None:
        if self._spawning.get(conversation_id) is task:
            del self._spawning[conversation_id]
        self._doomed.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when nobody waits

    async def _spawn(self, conversation_id: str) -> ConversationActor:
        owner = await self.deps.store.conversation_owner(conversation_id)
        cluster = self.deps.cluster
        if cluster is not None and owner is not None and conversation_id not in self._dormant:
            # Cluster mode: the log is the shared one (epoch, seq, replay from Redis).
            attached = await cluster.attach(conversation_id)
            if conversation_id not in self._dormant:
                self._dormant[conversation_id] = attached
        # Checked again after the await: a delete or a shutdown may have begun meanwhile,
        # and neither may find a live actor registered after it looked.
        if self._closing:
            raise ActorStopped(conversation_id)
        doomed = asyncio.current_task() in self._doomed
        if owner is None or doomed or conversation_id in self._deleting:
            record = self._dormant.pop(conversation_id, None)
            if record is not None and owner is None:
                record.close()  # deleted elsewhere
            elif record is not None:
                self._dormant[conversation_id] = record
            raise ConversationNotFound(conversation_id)
        actor = ConversationActor(
            conversation_id,
            owner,
            self.deps,
            on_exit=self._exited,
            dormant=self._dormant.pop(conversation_id, None),
            on_detached=self._unsubscribe_detached,
        )
        actor.task.add_done_callback(lambda task: self._finished(actor, task))
        self._actors[conversation_id] = actor
        return actor

    def _exited(self, actor: ConversationActor) -> None:
        """Called synchronously as the actor loop ends: no command can reach it after."""
        if self.deps.cluster is not None:
            self.deps.cluster.exited(actor)
        if self._actors.get(actor.conversation_id) is actor:
            del self._actors[actor.conversation_id]
            if (
                actor.idled
                and not self._closing
                and not actor.hub.closed
                and actor.hub.subscriber_count
            ):
                self._dormant[actor.conversation_id] = actor.dormant()

    async def _unsubscribe_detached(self, actor: ConversationActor, sub: Subscription) -> None:
        """An unsubscribe through an actor that stopped idle: its log may live on."""
        conversation_id = actor.conversation_id
        live = self._actors.get(conversation_id)
        if live is not None and live is not actor and live.hub is actor.hub:
            await live.unsubscribe(sub)
            return
        record = self._dormant.get(conversation_id)
        if record is not None and record.hub is actor.hub:
            record.unsubscribe(sub)
            if record.empty:
                record.wake()
                del self._dormant[conversation_id]
            return
        actor.hub.unsubscribe(sub)

    def _finished(self, actor: ConversationActor, task: asyncio.Task[None]) -> None:
        """Any end but an orderly one (stop, idle) is a crash, cancellation included."""
        if task.cancelled():
            self._supervise(actor, None)
        elif task.exception() is not None:
            self._supervise(actor, task.exception())

    def _supervise(self, actor: ConversationActor, exc: BaseException | None) -> None:
        self.crashes += 1
        log.error(
            "actor_crashed",
            conversation_id=actor.conversation_id,
            error="cancelled" if exc is None else f"{type(exc).__name__}: {exc}",
        )
        task = asyncio.get_running_loop().create_task(actor.crashed())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    @contextlib.asynccontextmanager
    async def deleting(
        self, conversation_id: str, *, here_only: bool = False
    ) -> AsyncIterator[None]:
        """Stop a conversation's actor for good while its rows are deleted.

        Until the block ends the conversation answers as not found, so no command can
        respawn an actor for rows that are about to disappear. In cluster mode the owner
        on another process stops its actor first and every process closes its log after
        (``here_only``: this is that other process's part).
        """
        cluster = None if here_only else self.deps.cluster
        if cluster is not None:
            await cluster.deleting(conversation_id)
        self._deleting.add(conversation_id)
        pending = self._spawning.get(conversation_id)
        if pending is not None:
            self._doomed.add(pending)  # a spawn that read the row before it went
        try:
            actor = self._actors.get(conversation_id)
            if actor is not None:
                await actor.stop("deleted")
            record = self._dormant.pop(conversation_id, None)
            if record is not None:
                record.close()
            yield
            if cluster is not None:
                await cluster.deleted(conversation_id)
        finally:
            self._deleting.discard(conversation_id)

    def generation_count(self) -> int:
        """How many generations run in this process now (admission control's measure)."""
        return sum(actor.generation is not None for actor in self._actors.values())

    def running_generations(self) -> list[asyncio.Task[None]]:
        return [
            actor.generation.task
            for actor in self._actors.values()
            if actor.generation is not None and actor.generation.task is not None
        ]

    async def drain(self, within: float) -> int:
        """Refuse new generations from now on and wait up to ``within`` seconds for the
        running ones to end on their own; how many still run then (``close`` ends them)."""
        self.draining = True
        tasks = self.running_generations()
        if tasks and within > 0:
            await asyncio.wait(tasks, timeout=within)
        return sum(not task.done() for task in tasks)

    async def close(self) -> None:
        """Stop every actor: running generations end as ``server_shutdown``."""
        self._closing = True
        actors = list(self._actors.values())
        with contextlib.suppress(Exception):
            await asyncio.gather(*(actor.stop("shutdown") for actor in actors))
        for record in self._dormant.values():
            record.close()
        self._dormant.clear()
