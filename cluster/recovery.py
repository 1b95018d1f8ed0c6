"""Owner death: what a dead owner left generating is closed by the next one.

Taking a lease marks the conversation's ``streaming`` rows ``interrupted`` (through the
store and its batch writer, under the new fence, with the text flushed so far) and appends
``error``/``owner_lost`` for each (:func:`interrupt_orphans`). A watcher takes the lease
of any watched log whose generation runs without an owner, so watchers on every process
stop waiting within the ttl plus a second. The start-up sweep does the same for rows whose
lease is gone, never a live neighbour's (a lease still there is looked at again once it
would have expired).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, cast

import redis.asyncio as redis
import structlog

from actors.api import ConversationStore, Dormant
from actors.error_text import error_text
from cluster.faults import REDIS_FAULTS
from cluster.keys import Keys
from cluster.leases import Held, Leases
from cluster.mirror import ClusterEventLog
from cluster.relay import Relay

log = structlog.get_logger(__name__)


class Node(Protocol):
    """What recovery uses of its node (:class:`cluster.process.ClusterProcess` is the one):
    declared here so that this module needs nothing from the node's."""

    @property
    def redis(self) -> redis.Redis: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def lease_ttl(self) -> float: ...

    @property
    def relay(self) -> Relay: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def held(self) -> Mapping[str, Held]: ...

    @property
    def store(self) -> ConversationStore | None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def lock(self, conversation_id: str) -> asyncio.Lock: ...

    async def take_over(self, cid: str, hub: ClusterEventLog) -> bool: ...

    def give_back(self, cid: str, held: Held | None = None) -> None: ...

    async def attach(self, conversation_id: str) -> Dormant: ...


async def interrupt_orphans(
    cid: str, hub: ClusterEventLog, fence: int, store: ConversationStore
) -> int:
    """Whatever was generating under an earlier lease is over: its owner is gone. Returns
    how many answers it closed (the store marks them, fenced)."""
    rows = await store.interrupt_orphans(cid, fence)
    for row in rows:
        message_id, generation_id = row
        log.warning("owner_lost", conversation_id=cid, message_id=message_id)
        hub.append(
            "error",
            {
                "messageId": message_id,
                "generationId": generation_id,
                "code": "owner_lost",
                "error": error_text("owner_lost"),
            },
        )
    return len(rows)


class Recovery:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def watch_forever(self) -> None:
        """A watched log whose generation runs without a lease: its owner died -- unless
        Redis was just restarted empty (every lease gone): for half a ttl after Redis
        answers again nothing is taken, so live owners take theirs back first (each
        append and each renewal, every third of a ttl, does)."""
        node = self.node
        interval = min(1.0, node.lease_ttl / 4)
        was_down = False
        quiet_until = 0.0
        while True:
            await asyncio.sleep(interval)  # the watcher's period, by design
            orphans = [
                (cid, hub)
                for cid, hub in list(node.relay.watched.items())
                if hub.running is not None and hub.sink is None and not hub.closed
            ]
            if not orphans:
                continue
            try:
                async with node.redis.pipeline(transaction=False) as pipe:
                    for cid, _ in orphans:
                        pipe.exists(node.keys.lease(cid))
                    exists = await pipe.execute()
            except REDIS_FAULTS:
                was_down = True
                continue
            if was_down:
                was_down = False
                quiet_until = time.monotonic() + node.lease_ttl / 2
            if time.monotonic() < quiet_until:
                continue
            for (cid, hub), there in zip(orphans, exists, strict=True):
                if not there:
                    node.spawn(self.recover(cid, hub))

    async def recover(self, cid: str, hub: ClusterEventLog) -> bool:
        """Take a free lease just to close what its dead owner left, then give it back."""
        node = self.node
        async with node.lock(cid):
            if cid in node.held:
                return False
            if not await node.take_over(cid, hub):
                return False
            node.give_back(cid)
            return True

    async def sweep(self) -> int:
        """Start-up: conversations with ``streaming`` rows and no lease were left by a
        process that died; close them (a live neighbour's rows have a lease)."""
        store = self.node.store
        assert store is not None, "the sweep runs once the node has its registry"
        return await self._sweep(await store.streaming_conversations(), again=True)

    async def _sweep(self, conversations: list[str], *, again: bool) -> int:
        node = self.node
        done = 0
        leased: list[str] = []
        for cid in conversations:
            if await node.leases.exists(cid):
                leased.append(cid)
                continue
            record = await node.attach(cid)
            if await self.recover(cid, cast(ClusterEventLog, record.hub)):
                done += 1
        if leased and again:
            # A lease may be a dead process's that has not expired yet: look once more
            # when it would have (a live owner renews it, and is left alone again).
            async def later() -> None:
                await asyncio.sleep(node.lease_ttl + 1.0)  # until such a lease expired
                swept = await self._sweep(leased, again=False)
                if swept:
                    log.warning("interrupted_conversations_recovered", count=swept)

            node.spawn(later())
        return done
