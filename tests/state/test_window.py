"""Conformance of :class:`state.window.Window`: ``MemoryWindow`` and ``RedisWindow`` pass the
same tests (see :mod:`tests.state.backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from cluster.state.window import RedisWindow, window_limiter
from state.window import MemoryWindow, Window
from tests.conditions import until
from tests.state.backends import BACKENDS, redis_shared

MakeWindow = Callable[[int, float], Window]


@pytest_asyncio.fixture(params=BACKENDS)
async def make_window(request: pytest.FixtureRequest) -> AsyncIterator[MakeWindow]:
    if request.param == "memory":
        yield MemoryWindow
        return
    async with redis_shared() as shared:
        limiter = window_limiter(shared.client, shared.prefix)
        names = iter(range(1_000))

        def make(limit: int, window: float) -> Window:
            return RedisWindow(limiter, shared.health, f"w{next(names)}", limit, window)

        yield make


async def test_limit_events_per_key_then_the_wait(make_window: MakeWindow) -> None:
    window = make_window(3, 60.0)
    assert window.limit == 3
    assert [await window.hit("a") for _ in range(3)] == [None, None, None]
    wait = await window.hit("a")
    assert wait is not None and 1 <= wait <= 60
    assert await window.hit("b") is None  # keys are counted apart


async def test_a_refused_event_is_not_counted_and_the_window_moves(
    make_window: MakeWindow,
) -> None:
    window = make_window(1, 1.0)
    assert await window.hit("a") is None
    assert await window.hit("a") == 1
    # Refused hits do not push the window: "a" is allowed once the first hit is 1 s old.

    async def allowed() -> bool:
        return await window.hit("a") is None

    await until(allowed, 3, every=0.1)
    assert await window.hit("a") == 1


async def test_windows_of_different_names_or_limits_are_apart(make_window: MakeWindow) -> None:
    first, second = make_window(1, 60.0), make_window(2, 60.0)
    assert await first.hit("k") is None
    assert await first.hit("k") is not None
    assert await second.hit("k") is None
    assert await second.hit("k") is None
    assert await second.hit("k") is not None
