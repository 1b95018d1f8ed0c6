"""The owner-death watcher (:meth:`cluster.recovery.Recovery.watch_forever`) against the
real Redis: a mirror's generation whose owner stops renewing is taken over by the time the
lease expires plus a round, while Redis is asked about the lease only when it could have
expired (not every round)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis

from actors.api import ConversationStore, Dormant
from cluster.keys import Keys
from cluster.leases import Held, Leases
from cluster.mirror import ClusterEventLog
from cluster.recovery import Recovery
from cluster.relay import Relay
from tests.cluster.conftest import LOG_TTL_MS, Node, own
from tests.conditions import until

TTL = 2.0


@dataclass
class Watcher:
    """What :class:`cluster.recovery.Node` asks of a node, on a real relay and leases; a
    take-over is recorded (and refused: the test looks at when it comes)."""

    node: Node
    relay: Relay
    leases: Leases
    lease_ttl: float = TTL
    held: dict[str, Held] = field(default_factory=dict)
    taken: list[tuple[str, float]] = field(default_factory=list)

    @property
    def redis(self) -> redis.Redis:
        return self.node.client

    @property
    def keys(self) -> Keys:
        return self.node.keys

    @property
    def store(self) -> ConversationStore | None:
        return None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.node.spawn(coro)

    def lock(self, conversation_id: str) -> asyncio.Lock:
        return asyncio.Lock()

    async def take_over(self, cid: str, hub: ClusterEventLog) -> bool:
        self.taken.append((cid, time.monotonic()))
        return False

    def give_back(self, cid: str, held: Held | None = None) -> None:
        pass

    async def attach(self, conversation_id: str) -> Dormant:
        raise AssertionError("not used by the watcher")


async def test_a_dead_owner_is_found_by_its_lease_expiry_asking_rarely(node: Node) -> None:
    # The owner appends an answer's start and tokens for a while, then dies (its lease,
    # taken once and never renewed, expires TTL after it was taken).
    owner = await own(node, lease_ttl=TTL)
    taken_at = time.monotonic()
    owner.hub.append("message", {"messageId": "u1", "role": "user"})
    owner.hub.append("init", {"generationId": "g1", "messageId": "m1"})
    other = node.other()
    relay = Relay(other.ctx())
    other.spawn(relay.run())
    mirror = ClusterEventLog(
        "c1",
        epoch=None,
        on_subscribe=relay.watch,
        on_presence=lambda hub: None,
        on_closed=lambda hub: None,
    )
    await relay.sync(mirror)
    mirror.subscribe(None, notify=lambda: None)
    watcher = Watcher(
        other,
        relay,
        Leases(other.ctx(), lease_ttl=TTL, log_ttl_ms=LOG_TTL_MS, lost=lambda c, r: None),
    )
    recovery = Recovery(watcher)
    task = asyncio.get_running_loop().create_task(recovery.watch_forever())
    try:
        for i in range(8):  # tokens for a while: the watcher needs not ask
            owner.say(1, prefix=f"k{i}")
            await asyncio.sleep(0.1)
        await until(lambda: mirror.running == "g1" and mirror.last_seq >= 10, what="fed")
        assert recovery.checks == 0, "an owner appending now is alive"
        await until(lambda: bool(watcher.taken), TTL + 3, what="the dead owner's answer taken over")
        cid, at = watcher.taken[0]
        assert cid == "c1"
        interval = min(1.0, TTL / 4)
        assert at >= taken_at + TTL - 0.05, "taken before the lease could have expired"
        assert at <= taken_at + TTL + interval + 0.5, at - taken_at
        # Rounds every TTL/4 for ~TTL - (the appends): asked at most once with time left,
        # once more when it expired (and a round of slack on a loaded machine).
        assert recovery.checks <= 3, recovery.checks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
