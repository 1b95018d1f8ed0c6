"""Conformance of :class:`state.stream_limits.StreamLimits`: ``MemoryStreamLimits`` and
``RedisStreamLimits`` pass the same tests (see :mod:`tests.state.backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from cluster.state.stream_limits import RedisStreamLimits
from state.errors import Refused
from state.stream_limits import STREAM_RETRY_AFTER_S, MemoryStreamLimits, StreamLimits
from tests.state.backends import BACKENDS, redis_shared

PER_USER = 2
PER_IP = 3


@dataclass
class Subject:
    limits: StreamLimits
    refusals: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(params=BACKENDS)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    refusals: list[str] = []
    if request.param == "memory":
        yield Subject(
            MemoryStreamLimits(per_user=PER_USER, per_ip=PER_IP, on_refusal=refusals.append),
            refusals,
        )
        return
    async with redis_shared() as shared:
        limits = RedisStreamLimits(
            shared, per_user=PER_USER, per_ip=PER_IP, on_refusal=refusals.append
        )
        yield Subject(limits, refusals)
        await limits.close()


async def test_streams_per_user_are_capped_and_given_back(subject: Subject) -> None:
    limits = subject.limits
    slots = [await limits.open("u", f"ip{n}") for n in range(PER_USER)]
    assert limits.open_for_user("u") == PER_USER
    with pytest.raises(Refused) as refused:
        await limits.open("u", "another ip")
    assert refused.value.limit == "streams_per_user"
    assert refused.value.retry_after == STREAM_RETRY_AFTER_S
    assert refused.value.message == (
        f"At most {PER_USER} live connections (WebSocket or event stream) per user; close one first"
    )
    slots[0].release()
    slots[0].release()  # exactly once
    assert limits.open_for_user("u") == PER_USER - 1
    await limits.close()  # what is given back in the background has landed
    slots[0] = await limits.open("u", "ip0")
    for slot in slots:
        slot.release()
    assert limits.open_for_user("u") == 0
    assert subject.refusals == ["streams_per_user"]


async def test_streams_per_address_are_capped(subject: Subject) -> None:
    limits = subject.limits
    slots = [await limits.open(f"user{n}", "shared ip") for n in range(PER_IP)]
    with pytest.raises(Refused) as refused:
        await limits.open("one more user", "shared ip")
    assert refused.value.limit == "streams_per_ip"
    assert refused.value.message == (
        f"At most {PER_IP} live connections (WebSocket or event stream) per client "
        "address; close one first"
    )
    assert limits.open_for_user("one more user") == 0  # a refused stream holds nothing
    await limits.open("one more user", "another ip")
    slots.pop().release()
    await limits.close()
    slots.append(await limits.open("one more user", "shared ip"))
    assert subject.refusals == ["streams_per_ip"]


async def test_a_stream_refused_for_its_address_takes_no_user_slot(subject: Subject) -> None:
    limits = subject.limits
    for n in range(PER_IP):
        await limits.open(f"filler{n}", "busy ip")
    for _ in range(PER_USER + 1):
        with pytest.raises(Refused):
            await limits.open("u", "busy ip")
    assert [await limits.open("u", "quiet ip") for _ in range(PER_USER)]
