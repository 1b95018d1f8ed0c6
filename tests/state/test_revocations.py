"""Conformance of :class:`state.revocations.Revocations`: ``MemoryRevocations`` and
``RedisRevocations`` pass the same tests (see :mod:`tests.state.backends`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cluster.state.revocations import RedisRevocations
from state.revocations import MemoryRevocations, Revocations
from tests.conditions import until
from tests.state.backends import BACKENDS, redis_shared


@pytest_asyncio.fixture(params=BACKENDS)
async def revocations(request: pytest.FixtureRequest) -> AsyncIterator[Revocations]:
    if request.param == "memory":
        yield MemoryRevocations()
        return
    async with redis_shared() as shared:
        yield RedisRevocations(shared)


async def test_a_published_revocation_is_revoked(revocations: Revocations) -> None:
    assert await revocations.revoked("s1") is False
    await revocations.publish("s1")
    assert await revocations.revoked("s1") is True
    assert await revocations.revoked("s2") is False


async def test_listeners_hear_every_revocation(revocations: Revocations) -> None:
    heard: list[str] = []
    listening = asyncio.create_task(revocations.listen(heard.append))
    try:
        # The subscription is made in the background: publish until it is heard.
        async def heard_first() -> bool:
            await revocations.publish("first")
            return "first" in heard

        await until(heard_first, 5, every=0.05)
        await revocations.publish("second")
        await until(lambda: "second" in heard, 5)
        assert set(heard) == {"first", "second"}
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
