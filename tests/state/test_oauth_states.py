"""Conformance of :class:`state.oauth_states.OAuthStates`: ``MemoryOAuthStates`` and
``RedisOAuthStates`` pass the same tests (see :mod:`tests.state.backends`)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cluster.state.oauth_states import RedisOAuthStates
from state.oauth_states import MemoryOAuthStates, OAuthStates
from tests.state.backends import BACKENDS, redis_shared


@pytest_asyncio.fixture(params=BACKENDS)
async def states(request: pytest.FixtureRequest) -> AsyncIterator[OAuthStates]:
    if request.param == "memory":
        yield MemoryOAuthStates()
        return
    async with redis_shared() as shared:
        yield RedisOAuthStates(shared)


async def test_a_state_is_spent_once(states: OAuthStates) -> None:
    state, other = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert await states.spend(state) is True
    assert await states.spend(state) is False
    assert await states.spend(state) is False
    assert await states.spend(other) is True


async def test_parallel_spends_of_one_state_have_one_winner(states: OAuthStates) -> None:
    state = secrets.token_urlsafe(32)
    won = await asyncio.gather(*(states.spend(state) for _ in range(10)))
    assert won.count(True) == 1


async def test_any_string_is_a_state(states: OAuthStates) -> None:
    odd = "\udcff non-UTF-8 bytes as lone surrogates"
    assert await states.spend(odd) is True
    assert await states.spend(odd) is False
