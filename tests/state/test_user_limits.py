"""Conformance of :class:`state.user_limits.UserLimits`: ``MemoryUserLimits`` and
``RedisUserLimits`` pass the same tests (see :mod:`tests.state.backends`): the same limits,
the same refusals in the same words, the same slot life cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from cluster.state.user_limits import RedisUserLimits
from cluster.state.window import RedisWindow, window_limiter
from state.errors import Refused
from state.user_limits import HOUR_S, MINUTE_S, MemoryUserLimits, UserLimits
from tests.state.backends import BACKENDS, redis_shared

MAX_GENERATIONS = 2
SENDS_PER_MINUTE = 3
NEW_PER_HOUR = 2


@dataclass
class Subject:
    limits: UserLimits
    refusals: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(params=BACKENDS)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    refusals: list[str] = []
    if request.param == "memory":
        limits: UserLimits = MemoryUserLimits(
            max_generations=MAX_GENERATIONS,
            new_conversations_per_hour=NEW_PER_HOUR,
            sends_per_minute=SENDS_PER_MINUTE,
            on_refusal=refusals.append,
        )
        yield Subject(limits, refusals)
        return
    async with redis_shared() as shared:
        limiter = window_limiter(shared.client, shared.prefix)
        limits = RedisUserLimits(
            shared,
            max_generations=MAX_GENERATIONS,
            new_conversations=RedisWindow(limiter, shared.health, "nc", NEW_PER_HOUR, HOUR_S),
            sends=RedisWindow(limiter, shared.health, "sends", SENDS_PER_MINUTE, MINUTE_S),
            on_refusal=refusals.append,
        )
        yield Subject(limits, refusals)
        await limits.close()


async def test_concurrent_generations_are_capped_and_given_back(subject: Subject) -> None:
    limits = subject.limits
    slots = [await limits.reserve_generation("u") for _ in range(MAX_GENERATIONS)]
    assert limits.generations.limit == MAX_GENERATIONS
    assert limits.generations.running("u") == MAX_GENERATIONS
    with pytest.raises(Refused) as refused:
        await limits.reserve_generation("u")
    assert refused.value.limit == "generations"
    assert refused.value.retry_after == 1
    assert refused.value.message == (
        f"At most {MAX_GENERATIONS} answers may be generating at once for one user; "
        "wait for one to finish"
    )
    assert subject.refusals == ["generations"]
    other = await limits.reserve_generation("someone else")  # users are counted apart
    slots[0].release()
    slots[0].release()  # exactly once
    assert limits.generations.running("u") == MAX_GENERATIONS - 1
    await limits.close()  # what is given back in the background has landed
    slots.append(await limits.reserve_generation("u"))
    for slot in [*slots[1:], other]:
        slot.release()
    assert limits.generations.running("u") == 0
    assert limits.generations.running("someone else") == 0


async def test_an_adopted_slot_never_released_is_released_by_abandon(subject: Subject) -> None:
    limits = subject.limits
    kept = await limits.reserve_generation("u")
    kept.adopt()
    kept.abandon()  # the actor took it: the sender's abandon leaves it held
    assert limits.generations.running("u") == 1
    dropped = await limits.reserve_generation("u")
    dropped.abandon()  # never reached an actor: given back
    assert limits.generations.running("u") == 1
    kept.release()
    assert limits.generations.running("u") == 0


async def test_a_slot_handed_over_is_forgotten_here(subject: Subject) -> None:
    limits = subject.limits
    slot = await limits.reserve_generation("u")
    forwarded = limits.adopt_generation("v", slot.token)  # the owner's side, same slot id
    assert limits.generations.running("v") == 1
    slot.hand_over()
    assert limits.generations.running("u") == 0
    slot.release()  # a no-op once handed over
    assert slot.adopted and not slot.held
    forwarded.release()
    assert limits.generations.running("v") == 0


async def test_sends_per_minute(subject: Subject) -> None:
    limits = subject.limits
    for _ in range(SENDS_PER_MINUTE):
        await limits.admit_send("u")
    with pytest.raises(Refused) as refused:
        await limits.admit_send("u")
    assert refused.value.limit == "sends"
    assert 1 <= refused.value.retry_after <= MINUTE_S
    assert refused.value.message == (
        f"At most {SENDS_PER_MINUTE} messages per minute; wait before sending again"
    )
    await limits.admit_send("someone else")
    assert subject.refusals == ["sends"]


async def test_new_conversations_per_hour(subject: Subject) -> None:
    limits = subject.limits
    for _ in range(NEW_PER_HOUR):
        await limits.admit_new_conversation("u")
    with pytest.raises(Refused) as refused:
        await limits.admit_new_conversation("u")
    assert refused.value.limit == "new_conversations"
    assert 1 <= refused.value.retry_after <= HOUR_S
    assert refused.value.message == (
        f"At most {NEW_PER_HOUR} new conversations per hour; continue an existing one"
    )
    await limits.admit_new_conversation("someone else")
    assert subject.refusals == ["new_conversations"]
