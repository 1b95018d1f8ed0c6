"""Fixtures of the cluster unit tests: the parts of a node (:class:`cluster.keys.NodeContext`)
on the real Redis, under a key prefix of the test's own (its keys deleted afterwards), or
on a private ``redis-server`` the test may stop (never the shared one).

Redis not reachable: the tests skip, except under ``CI=true`` where they fail
(:func:`tests.cluster_harness.require_redis`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
import redis.asyncio as redis

from cluster import scripts
from cluster.keys import Keys, NodeContext
from cluster.leases import Held, Leases
from cluster.log_writer import LogWriter
from cluster.mirror import ClusterEventLog
from cluster.wire import event_data, seq_of
from tests.cluster_harness import REDIS_URL, PrivateRedis, require_redis

#: The command timeout on the shared Redis: production's, longer than the relay's block.
SOCKET_TIMEOUT_S = 2.0
#: On a private Redis: a stopped one fails a round within this.
PRIVATE_TIMEOUT_S = 0.5
LOG_TTL_MS = 60_000


@dataclass
class Node:
    """What the parts of one node share, and the background tasks they spawned."""

    client: redis.Redis
    prefix: str
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ctx(self) -> NodeContext:
        return NodeContext(self.client, self.keys, self.node_id, self.spawn)

    def other(self) -> Node:
        """Another process of the same cluster (same Redis and prefix, its own node id)."""
        return Node(self.client, self.prefix, tasks=self.tasks)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def owner_hub(conversation_id: str, epoch: str = "E1") -> ClusterEventLog:
    """A conversation's hub as a node makes one (callbacks unused here)."""
    return ClusterEventLog(
        conversation_id,
        epoch=epoch,
        on_subscribe=lambda hub: None,
        on_presence=lambda hub: None,
        on_closed=lambda hub: None,
    )


async def take(leases: Leases, cid: str, epoch: str = "E1") -> Held | None:
    """The lease as :meth:`cluster.process.ClusterProcess.take_over` takes it (one pipeline),
    recorded as held on success."""
    async with leases.redis.pipeline(transaction=False) as pipe:
        leases.queue_take(pipe, cid, epoch)
        (answer,) = await pipe.execute(raise_on_error=False)
    held = leases.taken_from(answer)
    if held is not None:
        leases.held[cid] = held
    return held


@dataclass
class Owner:
    """One node owning one conversation: its lease, its log writer (running) and hub."""

    node: Node
    leases: Leases
    writer: LogWriter
    hub: ClusterEventLog
    held: Held
    refused: list[tuple[str, str, str]] = field(default_factory=list)

    def say(self, count: int, message: str = "m1", prefix: str = "t") -> None:
        """``count`` tokens, appended in one event-loop turn."""
        for i in range(count):
            self.hub.append("token", {"messageId": message, "text": f"{prefix}{i} "})


async def own(
    node: Node, cid: str = "c1", *, epoch: str = "E1", after: int = 0, lease_ttl: float = 5.0
) -> Owner:
    """Take the conversation's lease and start a writer for its hub (at ``after``)."""
    for source in (scripts.ACQUIRE, scripts.APPEND, scripts.RELEASE):
        await node.client.script_load(source)
    leases = Leases(node.ctx(), lease_ttl=lease_ttl, log_ttl_ms=LOG_TTL_MS, lost=lambda c, r: None)
    held = await take(leases, cid, epoch)
    assert held is not None
    refused: list[tuple[str, str, str]] = []
    writer = LogWriter(
        node.ctx(),
        ttl_ms=leases.ttl_ms,
        log_ttl_ms=LOG_TTL_MS,
        refused=lambda c, lease, reason: refused.append((c, lease, reason)),
    )
    hub = owner_hub(cid, epoch)
    if after:
        hub.rebase(epoch, after)
    hub.lease, hub.sink = held.value, writer.sink
    held.hub = hub
    node.spawn(writer.run())
    return Owner(node, leases, writer, hub, held, refused)


async def stream(node: Node, cid: str = "c1") -> list[tuple[int, dict[str, object]]]:
    entries: Any = await node.client.xrange(node.keys.log(cid), min="-", max="+")
    return [(seq_of(entry_id), event_data(fields)) for entry_id, fields in entries]


async def holds(node: Node, last_seq: int, cid: str = "c1") -> bool:
    """The stream's last entry is ``last_seq``."""
    tail: Any = await node.client.xrevrange(node.keys.log(cid), count=1)
    return bool(tail) and seq_of(tail[0][0]) == last_seq


def client_for(url: str, timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    return redis.from_url(url, socket_connect_timeout=1, socket_timeout=timeout)


async def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    """A node on the shared Redis, under a fresh random key prefix."""
    await require_redis()
    client = client_for(REDIS_URL)
    this = Node(client, f"cerotest:unit:{secrets.token_hex(6)}:")
    try:
        yield this
    finally:
        await this.stop()
        await delete_prefix(client, this.prefix)
        await client.aclose()


@pytest_asyncio.fixture
async def private_node(tmp_path: Path) -> AsyncIterator[tuple[Node, PrivateRedis]]:
    """A node on a private ``redis-server`` of this test (to stop and start again)."""
    await require_redis()
    private = PrivateRedis(tmp_path)
    await private.start()
    client = client_for(private.url, PRIVATE_TIMEOUT_S)
    this = Node(client, "cerotest:unit:")
    try:
        yield this, private
    finally:
        await this.stop()
        await client.aclose()
        private.resume()
        await private.kill()
