"""Redis key names. One prefix (``CERO_REDIS_PREFIX``) for every process of a cluster."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def fence(self) -> str:
        """One counter for every fencing token: monotonic, so valid per conversation too."""
        return f"{self.prefix}fence"

    @property
    def epochs(self) -> str:
        """The epoch notices: a stream of ``c`` (conversation id), ``e`` (epoch), one entry
        per log started in an epoch of its own (:data:`cluster.scripts.ACQUIRE`), read by
        every relay (:mod:`cluster.relay`)."""
        return f"{self.prefix}epochs"

    def lease(self, conversation_id: str) -> str:
        return f"{self.prefix}c:{conversation_id}:lease"

    def last(self, conversation_id: str) -> str:
        """The token of the conversation's last lease (see :mod:`cluster.scripts`)."""
        return f"{self.prefix}c:{conversation_id}:last"

    def log(self, conversation_id: str) -> str:
        return f"{self.prefix}c:{conversation_id}:log"

    def epoch(self, conversation_id: str) -> str:
        return f"{self.prefix}c:{conversation_id}:epoch"

    def viewers(self, conversation_id: str) -> str:
        """A hash: node id → ``"<viewers>:<expiry ms>"`` (each process's share)."""
        return f"{self.prefix}c:{conversation_id}:viewers"

    def commands(self, node_id: str) -> str:
        return f"{self.prefix}n:{node_id}:cmd"

    def replies(self, node_id: str) -> str:
        return f"{self.prefix}n:{node_id}:reply"

    def wake(self, node_id: str) -> str:
        return f"{self.prefix}n:{node_id}:wake"

    def conversation_of_log(self, key: str) -> str:
        return key[len(self.prefix) + 2 : -4]


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What every part of a node (:mod:`cluster.process`) shares: the Redis client, the key
    names, this process's node id, and a way to run background tasks the node owns (they
    are cancelled when it closes)."""

    redis: redis.Redis
    keys: Keys
    node_id: str
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
