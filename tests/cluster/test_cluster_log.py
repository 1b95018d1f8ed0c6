"""The cluster log's two halves without server processes: a mirror hub moved to another
position of the log (sans-I/O), and the fenced append script against the real Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
import redis.asyncio as redis

from cluster import scripts
from cluster.keys import Keys
from cluster.mirror import ClusterEventLog
from cluster.wire import seq_of
from tests.cluster_harness import REDIS_URL, require_redis


def mirror() -> ClusterEventLog:
    return ClusterEventLog(
        "c1",
        epoch="e1",
        on_subscribe=lambda _hub: None,
        on_presence=lambda _hub: None,
        on_closed=lambda _hub: None,
    )


def event(seq: int, text: str) -> dict[str, object]:
    return {"type": "token", "epoch": "e1", "seq": seq, "messageId": "m1", "text": text}


def test_a_rebased_mirror_resets_its_subscribers_without_blaming_them() -> None:
    """A mirror that cannot bridge a gap gives each subscriber a ``reset`` (and live
    events after it); that is not an overflow, so a WebSocket is not closed with 4008."""
    hub = mirror()
    woken: list[int] = []
    sub = hub.subscribe(None, notify=lambda: woken.append(1))
    assert hub.feed(1, event(1, "a")) and hub.feed(2, event(2, "b"))
    assert not hub.feed(5, event(5, "e"))  # a gap: the caller re-reads the stream
    hub.rebase("e1", 4)
    assert hub.feed(5, event(5, "e"))
    taken = sub.take()
    assert [(e.type, e.seq) for e in taken] == [("reset", 4), ("token", 5)]
    assert woken and not sub.overflowed and not sub.closed


@pytest_asyncio.fixture
async def log_keys() -> AsyncIterator[tuple[redis.Redis, Keys]]:
    """The shared Redis under a prefix of this test's own (deleted afterwards)."""
    await require_redis()
    client = redis.from_url(REDIS_URL)
    keys = Keys(f"cerotest:{secrets.token_hex(6)}:")
    try:
        yield client, keys
    finally:
        found = [key async for key in client.scan_iter(match=f"{keys.prefix}*")]
        if found:
            await client.delete(*found)
        await client.aclose()


async def test_the_append_skips_what_the_log_holds(log_keys: tuple[redis.Redis, Keys]) -> None:
    """A round sent again after a timeout (which Redis may have applied after all, before
    or after the retry) appends each event once, in order: no error, no gap."""
    client, keys = log_keys
    append = client.register_script(scripts.APPEND)
    lease = "node:1"
    await client.set(keys.lease("c1"), lease)
    await client.set(keys.last("c1"), "1")
    cid_keys = [keys.lease("c1"), keys.log("c1"), keys.epoch("c1"), keys.last("c1")]

    async def send(*seqs: int) -> Any:
        args: list[Any] = [lease, "e1", "0-0", 60_000, 10_000, "1"]
        for seq in seqs:
            args += [seq, f'{{"seq":{seq}}}']
        return await append(keys=cid_keys, args=[*args, 0])

    assert await send(1, 2) == 1
    assert await send(1, 2, 3, 4) == 1  # the retry carries the first round again
    assert await send(3, 4) == 1  # the stale first attempt, applied late
    assert await send(5) == 1
    entries: Any = await client.xrange(keys.log("c1"))
    assert [seq_of(entry_id) for entry_id, _ in entries] == [1, 2, 3, 4, 5]
