"""Cluster mode's account channel (:mod:`cluster.account_feed`) on the real Redis: two
processes' feeds under one prefix number every event alike; a lost message is read back
from the stream (no gap, no duplicate); a log Redis lost starts a new epoch and the
subscribers get ``reset``; a resume on a process that never saw the user replays from
the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from actors.api import Event, SubscribeSpec, Subscription
from cluster.account_feed import ClusterAccountFeeds
from cluster.state.connection import RedisHealth
from tests.cluster.conftest import Node
from tests.conditions import until

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def feeds(node: Node) -> AsyncIterator[tuple[ClusterAccountFeeds, ClusterAccountFeeds]]:
    health = RedisHealth(node.client)
    one = ClusterAccountFeeds(node.client, health, node.prefix)
    two = ClusterAccountFeeds(node.client, health, node.prefix)
    one.start()
    two.start()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


class Reader:
    """A subscription's events as a transport would take them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sub: Subscription | None = None

    def spec(self) -> SubscribeSpec:
        return SubscribeSpec(notify=self._take, viewer=False)

    def _take(self) -> None:
        if self.sub is not None:
            self.events.extend(self.sub.take())

    def adopt(self, sub: Subscription) -> Reader:
        self.sub = sub
        self.events.extend(sub.take())
        return self

    def kinds(self) -> list[str]:
        return [e.type for e in self.events]


async def _reader(feeds: ClusterAccountFeeds, user: str, after: str | None = None) -> Reader:
    reader = Reader()
    _, sub = await feeds.subscribe(user, after, reader.spec())
    return reader.adopt(sub)


def _named(n: int) -> dict[str, Any]:
    return {"conversationId": f"c{n}"}


async def test_two_processes_number_every_event_alike(
    feeds: tuple[ClusterAccountFeeds, ClusterAccountFeeds],
) -> None:
    one, two = feeds
    on_one, on_two = await _reader(one, "u1"), await _reader(two, "u1")
    for n in range(10):
        await (one if n % 2 else two).publish("u1", "conversation.deleted", _named(n))
    await until(lambda: len(on_one.events) == 10 and len(on_two.events) == 10, what="both")
    assert [e.data for e in on_one.events] == [e.data for e in on_two.events]
    assert [e.seq for e in on_one.events] == list(range(1, 11))
    assert [e.data["conversationId"] for e in on_one.events] == [f"c{n}" for n in range(10)]
    # Another user's reader sees none of it.
    other = await _reader(two, "u2")
    await one.publish("u1", "conversation.deleted", _named(99))
    await until(lambda: len(on_two.events) == 11, what="the 11th")
    assert other.events == []


async def test_a_lost_message_is_read_back_from_the_stream(
    feeds: tuple[ClusterAccountFeeds, ClusterAccountFeeds],
) -> None:
    one, two = feeds
    reader = await _reader(two, "u1")
    await one.publish("u1", "conversation.deleted", _named(1))
    await until(lambda: len(reader.events) == 1, what="first")
    log = two.get("u1")
    assert log is not None
    # The listener misses seq 2 (as while it reconnected): the next message is a gap.
    two._stale.clear()
    real = two._on_message
    dropped: list[bytes] = []

    def drop_once(data: bytes) -> None:
        if not dropped:
            dropped.append(data)
            return
        real(data)

    two._on_message = drop_once  # type: ignore[method-assign]
    await one.publish("u1", "conversation.deleted", _named(2))
    await until(lambda: bool(dropped), what="the drop")
    await one.publish("u1", "conversation.deleted", _named(3))
    await until(lambda: len(reader.events) == 3, what="read back")
    assert [e.seq for e in reader.events] == [1, 2, 3]
    assert "reset" not in reader.kinds()
    assert two.resets == 0  # read back, not reset


async def test_a_lost_log_starts_a_new_epoch_and_resets(
    node: Node, feeds: tuple[ClusterAccountFeeds, ClusterAccountFeeds]
) -> None:
    one, two = feeds
    reader = await _reader(two, "u1")
    await one.publish("u1", "conversation.deleted", _named(1))
    await until(lambda: len(reader.events) == 1, what="first")
    first_epoch = reader.events[0].data["epoch"]
    # Redis forgets the user's keys (restarted empty, or expired).
    await node.client.delete(*one._keys("u1"))
    await one.publish("u1", "conversation.deleted", _named(2))
    await until(lambda: "reset" in reader.kinds() and len(reader.events) >= 3, what="reset")
    assert reader.kinds() == ["conversation.deleted", "reset", "conversation.deleted"]
    assert reader.events[-1].data["epoch"] != first_epoch
    assert reader.events[-1].seq == 1


async def test_a_resume_on_a_process_that_never_saw_the_user(
    feeds: tuple[ClusterAccountFeeds, ClusterAccountFeeds],
) -> None:
    one, two = feeds
    first = await _reader(one, "u1")
    for n in range(5):
        await one.publish("u1", "conversation.deleted", _named(n))
    await until(lambda: len(first.events) == 5, what="five")
    cursor = first.events[1].cursor
    assert two.get("u1") is None
    resumed = await _reader(two, "u1", after=cursor)
    assert resumed.sub is not None and resumed.sub.recovered
    assert [e.data for e in resumed.events] == [e.data for e in first.events[2:]]
    # A cursor older than the stream holds cannot be replayed there either.
    stale = await _reader(two, "u1", after=f"{first.events[0].data['epoch']}:0")
    assert stale.kinds() == [e.type for e in first.events]  # seq 0: everything is held
    lost = await _reader(two, "u1", after="other-epoch:3")
    assert lost.kinds() == ["reset"]
    await asyncio.sleep(0)
