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

from cluster.keys import Keys, NodeContext
from cluster.leases import Held, Leases
from cluster.mirror import ClusterHub
from tests.cluster_harness import REDIS_URL, PrivateRedis, require_redis

#: A short command timeout: a stopped private Redis fails a round within it.
SOCKET_TIMEOUT_S = 0.5


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


def owner_hub(conversation_id: str, epoch: str = "E1") -> ClusterHub:
    """A conversation's hub as a node makes one (callbacks unused here)."""
    return ClusterHub(
        conversation_id,
        epoch=epoch,
        on_subscribe=lambda hub: None,
        on_presence=lambda hub: None,
        on_closed=lambda hub: None,
    )


async def take(leases: Leases, cid: str, epoch: str = "E1") -> Held | None:
    """The lease as :meth:`cluster.node.ClusterNode.take_over` takes it (one pipeline),
    recorded as held on success."""
    async with leases.redis.pipeline(transaction=False) as pipe:
        leases.queue_take(pipe, cid, epoch)
        (answer,) = await pipe.execute(raise_on_error=False)
    held = leases.taken_from(answer)
    if held is not None:
        leases.held[cid] = held
    return held


def client_for(url: str) -> redis.Redis:
    return redis.from_url(url, socket_connect_timeout=1, socket_timeout=SOCKET_TIMEOUT_S)


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
    client = client_for(private.url)
    this = Node(client, "cerotest:unit:")
    try:
        yield this, private
    finally:
        await this.stop()
        await client.aclose()
        private.resume()
        await private.kill()
