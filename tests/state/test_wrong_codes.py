"""Conformance of :class:`state.wrong_codes.WrongCodes`: ``MemoryWrongCodes`` and
``RedisWrongCodes`` pass the same tests (see :mod:`tests.state.backends`). Replaces the
memory-only limiter tests of ``test_device_limits`` and ``test_auth_hardening``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from cluster.state.wrong_codes import RedisWrongCodes
from state.wrong_codes import MemoryWrongCodes, WrongCodes
from tests.state.backends import BACKENDS, redis_shared

MakeWrongCodes = Callable[[int], WrongCodes]


@pytest_asyncio.fixture(params=BACKENDS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeWrongCodes]:
    if request.param == "memory":
        yield lambda limit: MemoryWrongCodes(limit=limit)
        return
    async with redis_shared() as shared:
        yield lambda limit: RedisWrongCodes(shared, limit=limit)


async def test_lookups_in_progress_hold_the_budget(make: MakeWrongCodes) -> None:
    limiter = make(2)
    assert await limiter.acquire("a") is None
    assert await limiter.acquire("a") is None
    # Two lookups in progress hold the budget: a third waits, then is told to retry soon.
    assert await limiter.acquire("a", wait=0.05) == 1
    await limiter.finish("a", wrong=False)  # one was a good code
    assert await limiter.acquire("a", wait=0.05) is None
    await limiter.finish("a", wrong=True)
    await limiter.finish("a", wrong=True)
    retry = await limiter.acquire("a", wait=0.05)
    assert retry is not None and retry > 1  # two wrong ones now: the window's wait
    assert await limiter.acquire("b") is None  # another address has its own budget


async def test_a_lookup_waits_for_lookups_in_progress_instead_of_refusing(
    make: MakeWrongCodes,
) -> None:
    limiter = make(2)
    assert await limiter.acquire("a") is None
    assert await limiter.acquire("a") is None
    third = asyncio.ensure_future(limiter.acquire("a"))
    await asyncio.sleep(0.01)  # a negative check: after a moment it is still waiting
    assert not third.done()  # the budget is held by two lookups in progress: it waits
    await limiter.finish("a", wrong=False)  # one was a good code
    assert await asyncio.wait_for(third, 1) is None
    await limiter.finish("a", wrong=True)
    fourth = asyncio.ensure_future(limiter.acquire("a"))
    await asyncio.sleep(0.01)  # a negative check, as above
    assert not fourth.done()
    await limiter.finish("a", wrong=True)  # the third was wrong too: two decided wrong
    retry = await asyncio.wait_for(fourth, 1)
    assert retry is not None and retry > 1
    assert await limiter.acquire("b") is None
    assert await limiter.acquire("b", wait=0.05) is None
    assert await limiter.acquire("b", wait=0.05) == 1  # waited long enough: retry soon


async def test_parallel_wrong_guesses_get_no_more_than_the_limit(make: MakeWrongCodes) -> None:
    limiter = make(5)

    async def guess() -> bool:
        if await limiter.acquire("ip", wait=0.5) is not None:
            return False
        await asyncio.sleep(0.01)
        await limiter.finish("ip", wrong=True)
        return True

    tried = await asyncio.gather(*(guess() for _ in range(20)))
    assert sum(tried) == 5
