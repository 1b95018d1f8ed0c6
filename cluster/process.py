"""One cluster node per process: the actors' cluster hooks, and who owns what.

:class:`ClusterProcess` implements :class:`actors.cluster_hooks.ClusterHooks` and wires the
parts, one job each:

- :mod:`cluster.leases`: leases and fencing tokens, renewed every ttl/3;
- :mod:`cluster.log_writer`: the owner's events appended to the Redis stream, fenced,
  one pipeline per event-loop turn;
- :mod:`cluster.relay`: the mirrors of conversations owned elsewhere, fed by one
  ``XREAD BLOCK``;
- :mod:`cluster.commands`: ``send``, ``cancel`` and delete forwarded to the owner;
- :mod:`cluster.viewers`: presence summed over the processes;
- :mod:`cluster.recovery`: what a dead owner left is closed (``owner_lost``), the
  watcher and the start-up sweep.

What stays here is the ownership of one conversation changing hands: a hub becomes the
owner's when this process takes the lease (:meth:`ClusterProcess.claim`), and turns back into
a mirror, re-read from the stream, when the lease is given back or found lost (a refused
renewal or append stops the generation at once). No owner on a command: the receiving
process takes the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, cast

import redis.asyncio as redis
import structlog
from redis.exceptions import NoScriptError

from actors.api import (
    ActorStopped,
    Cancel,
    ConversationActor,
    ConversationNotFound,
    ConversationStore,
    Dormant,
    ModelSpec,
    Registry,
    ResumeAt,
    Send,
    Slot,
    StopReason,
    StoreUnavailable,
    Subscribe,
    Switch,
)
from cluster import scripts
from cluster.commands import Commands
from cluster.keys import Keys, NodeContext
from cluster.leases import Held, Leases
from cluster.log_writer import LogWriter
from cluster.mirror import ClusterEventLog
from cluster.recovery import Recovery, interrupt_orphans
from cluster.relay import Relay
from cluster.viewers import ViewerCounts

log = structlog.get_logger(__name__)


class ClusterProcess:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        lease_ttl: float,
        log_ttl: float,
        resolve_model: Callable[[str], ModelSpec],
        adopt_slot: Callable[[str, str], Slot] | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys = Keys(prefix)
        self.node_id = node_id = secrets.token_urlsafe(12)
        self.lease_ttl = lease_ttl
        self.log_ttl_ms = int(log_ttl * 1000)
        self.forward_timeout = max(5.0, 2 * lease_ttl)
        self.registry: Registry | None = None
        #: Metrics hook: answers a dead owner left, closed here (``interrupted``,
        #: ``owner_lost``).
        self.on_orphans: Callable[[int], None] | None = None
        ctx = NodeContext(client, keys, node_id, self.spawn)
        self.leases = Leases(ctx, lease_ttl=lease_ttl, log_ttl_ms=self.log_ttl_ms, lost=self.lost)
        self.held: dict[str, Held] = self.leases.held
        self.writer = LogWriter(
            ctx, ttl_ms=self.leases.ttl_ms, log_ttl_ms=self.log_ttl_ms, refused=self._refused
        )
        self.relay = Relay(ctx)
        self.viewers = ViewerCounts(
            ctx, lease_ttl, owned=lambda: [(cid, held.hub) for cid, held in self.held.items()]
        )
        self.commands = Commands(
            ctx,
            forward_timeout=self.forward_timeout,
            resolve_model=resolve_model,
            adopt_slot=adopt_slot,
            sync=self.relay.sync,
        )
        self.recovery = Recovery(self)
        self._close_log = client.register_script(scripts.CLOSE)
        #: One lock per conversation being claimed or recovered (gone when unused).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # -- metrics (server.ops.metrics reads these) -------------------------------------------

    @property
    def forwarded(self) -> int:
        return self.commands.forwarded

    @property
    def appended(self) -> int:
        return self.writer.appended

    @property
    def pipelines(self) -> int:
        return self.writer.pipelines

    @property
    def relayed(self) -> int:
        return self.relay.relayed

    @property
    def relay_reads(self) -> int:
        return self.relay.reads

    @property
    def relay_lag(self) -> float:
        return self.relay.lag

    @property
    def leases_taken(self) -> int:
        return self.leases.taken

    @property
    def leases_lost(self) -> int:
        return self.leases.lost

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def store(self) -> ConversationStore | None:
        """The conversation store (the registry's): what cluster mode writes to the
        database goes through it."""
        return None if self.registry is None else self.registry.deps.store

    def start(self, registry: Registry) -> None:
        self.registry = registry
        self.commands.registry = registry
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self.writer.run(), "cluster-writer"),
            (self.relay.run(), "cluster-relay"),
            (self.leases.renew_forever(), "cluster-renewer"),
            (self.commands.run(), "cluster-commands"),
            (self.recovery.watch_forever(), "cluster-watcher"),
            (self.viewers.run(), "cluster-presence"),
        ):
            self._loops.append(loop.create_task(coro, name=name))

    async def close(self) -> None:
        """After the registry closed: what the actors appended last is written, the
        leases are given back, the loops stop."""
        for cid, held in list(self.held.items()):
            held.hub.sink = None
            self.writer.release(cid, held.value)
        self.held.clear()
        self.writer.close()
        writer = self._loops[0] if self._loops else None
        if writer is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
        for task in self._loops + list(self._tasks):
            task.cancel()
        for task in self._loops + list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    def fence_of(self, conversation_id: str) -> int:
        return self.leases.fence_of(conversation_id)

    async def sync(self, hub: ClusterEventLog, *, hard: bool = False) -> None:
        await self.relay.sync(hub, hard=hard)

    async def sweep(self) -> int:
        return await self.recovery.sweep()

    # -- the hooks of actors.cluster_hooks ----------------------------------------------

    async def attach(self, conversation_id: str) -> Dormant:
        hub = ClusterEventLog(
            conversation_id,
            epoch=None,
            on_subscribe=self.relay.watch,
            on_presence=self.viewers.changed,
            on_closed=self._closed_elsewhere,
        )
        await self.sync(hub)
        return Dormant.fresh(hub)

    async def intercept(
        self, actor: ConversationActor, command: Send | Cancel | Switch | Subscribe | ResumeAt
    ) -> tuple[bool, object]:
        hub = cast(ClusterEventLog, actor.hub)
        if isinstance(command, Subscribe | ResumeAt):
            if hub.sink is None:
                await self.sync(hub)
            return False, None
        for _ in range(3):
            if await self.claim(actor):
                return False, None
            owner = await self.leases.owner_of(actor.conversation_id)
            if owner is None:
                continue  # released meanwhile: try to take it
            if owner == self.node_id:
                await asyncio.sleep(0.05)  # our own lease being given back: retry
                continue
            if isinstance(command, Cancel):
                return True, await self.commands.cancel(actor, owner, command.generation_id)
            if isinstance(command, Switch):
                return True, await self.commands.switch(actor, owner, command.message_id)
            return True, await self.commands.send(actor, hub, owner, command)
        raise StoreUnavailable("the conversation's owner could not be determined")

    def exited(self, actor: ConversationActor) -> None:
        cid = actor.conversation_id
        held = self.held.get(cid)
        if held is None or held.hub is not actor.hub:
            return
        running = actor.generation_running()
        if running is not None:
            # A crashed actor's generation still stores and publishes its end under the
            # lease: give it back after that.
            def later(_task: object) -> None:
                if self.held.get(cid) is held:
                    self.give_back(cid)

            running.add_done_callback(later)
            return
        self.give_back(cid)

    async def deleting(self, conversation_id: str) -> None:
        owner = await self.leases.owner_of(conversation_id)
        if owner is not None and owner != self.node_id:
            with contextlib.suppress(StoreUnavailable, ConversationNotFound, ActorStopped):
                await self.commands.forward(owner, {"kind": "delete", "conv": conversation_id})

    async def deleted(self, conversation_id: str) -> None:
        await self._close_log(
            keys=[self.keys.log(conversation_id), self.keys.epoch(conversation_id)],
            args=[int(self.forward_timeout * 1000) + 60_000],
        )

    def _closed_elsewhere(self, hub: ClusterEventLog) -> None:
        """A mirror read the delete marker: this process's actor and record go too."""
        registry = self.registry
        if registry is None:
            return

        async def stop() -> None:
            async with registry.deleting(hub.conversation_id, here_only=True):
                pass

        self.spawn(stop())

    # -- ownership changing hands -------------------------------------------------------

    async def claim(self, actor: ConversationActor) -> bool:
        """Own the conversation: ``True`` if this process holds (or just took) the lease."""
        cid = actor.conversation_id
        hub = cast(ClusterEventLog, actor.hub)
        held = self.held.get(cid)
        if held is not None and held.hub is hub and hub.sink is not None:
            return True
        async with self.lock(cid):
            held = self.held.get(cid)
            if held is not None and held.hub is hub and hub.sink is not None:
                return True
            if not await self.take_over(cid, hub):
                return False
            actor.forget_history()
            return True

    async def take_over(self, cid: str, hub: ClusterEventLog) -> bool:
        """Under :meth:`lock`: take the free lease and make ``hub`` the owner's (``False``:
        another process holds it). One round trip: the lease (and the log's epoch) and the
        reads that bring the hub up to the log go in one pipeline."""
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                self.leases.queue_take(pipe, cid, hub.epoch)
                start = self.relay.queue_reads(pipe, hub)
                answers = await pipe.execute(raise_on_error=False)
            if not (attempt == 0 and isinstance(answers[0], NoScriptError)):
                break
            await self.leases.load_scripts()  # Redis restarted empty: the lease again
        taken = self.leases.taken_from(answers[0])
        if taken is None:
            return False
        try:
            reads = answers[1:]
            if any(isinstance(answer, BaseException) for answer in reads):
                await self.sync(hub)
            else:
                await self.relay.apply(hub, start, reads)  # on where the last owner left it
            self.become_owner(cid, hub, taken)
            store = self.store
            assert store is not None, "leases are taken once the node has its registry"
            orphans = await interrupt_orphans(cid, hub, taken.fence, store)
        except BaseException:
            self.give_back(cid, None if self.held.get(cid) is taken else taken)
            raise
        if orphans and self.on_orphans is not None:
            self.on_orphans(orphans)
        return True

    def become_owner(self, cid: str, hub: ClusterEventLog, taken: Held) -> None:
        taken.hub = hub
        self.held[cid] = taken
        hub.lease = taken.value
        hub.sink = self.writer.sink
        log.info("lease_taken", conversation_id=cid, fence=taken.fence, seq=hub.last_seq)

    def give_back(self, cid: str, held: Held | None = None) -> None:
        """Release after what was appended under the lease is written."""
        if held is None:
            held = self.held.pop(cid, None)
            if held is None:
                return
            held.hub.sink = None
            held.hub.lease = None
            self._follow(held.hub)
        self.writer.release(cid, held.value)

    def _follow(self, hub: ClusterEventLog) -> None:
        """A hub that stops being the owner's: its subscribers follow the stream now."""
        if hub.subscriber_count and not hub.closed:
            self.relay.watch(hub)

    def _refused(self, cid: str, lease: str, reason: str) -> None:
        """The log writer's append under ``lease`` was refused."""
        held = self.held.get(cid)
        if held is not None and held.value == lease:
            self.lost(cid, reason)

    def lost(self, cid: str, reason: str) -> None:
        """The lease is not ours any more: stop writing at once, follow the stream."""
        held = self.held.pop(cid, None)
        if held is None:
            return
        hub = held.hub
        hub.sink = None
        hub.lease = None
        self._follow(hub)
        log.warning("lease_lost", conversation_id=cid, fence=held.fence, reason=reason)
        self.writer.drop(cid)
        actor = self.registry.peek(cid) if self.registry is not None else None
        if actor is not None:
            actor.stop_generation(StopReason.SHUTDOWN)
        self.spawn(self.relay.resync(hub, hard=True))


__all__ = ["ClusterProcess", "Held"]
