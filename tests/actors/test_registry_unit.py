"""``Registry`` alone: spawn races, delete during spawn, crash supervision, idle respawn.

The store is the in-memory one of ``tests/memory_store.py``; its ``conversation_owner``
can be held on an event, which is how a test keeps a spawn pending while others race it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from actors.conversation import ActorDeps, ConversationActor
from actors.flusher import Flusher
from actors.mailbox import ActorStopped
from actors.models.base import Final
from actors.registry import ConversationNotFound, Registry
from tests.memory_store import (
    TERMINAL,
    Hold,
    MemoryStore,
    Model,
    ScriptedProvider,
    StoreDown,
    Watcher,
    simple_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")

USER = "user-1"
MODEL = Model()


@dataclass
class Env:
    store: MemoryStore
    provider: ScriptedProvider
    registry: Registry
    conversation_id: str


@contextlib.asynccontextmanager
async def env(*, idle_timeout: float = 60.0) -> AsyncIterator[Env]:
    store = MemoryStore()
    provider = ScriptedProvider()
    flusher = Flusher(store, 3600.0)
    registry = Registry(
        ActorDeps(
            store=store,
            providers={"scripted": provider},
            build_request=simple_request,
            flusher=flusher,
            idle_timeout=idle_timeout,
            commit_timeout=1.0,
        )
    )
    try:
        yield Env(store, provider, registry, store.create_conversation(USER))
    finally:
        await registry.close()
        await flusher.stop()


async def watch(actor: ConversationActor) -> Watcher:
    watcher = Watcher()
    return watcher.attach(await actor.subscribe(None, watcher.spec()))


# -- spawn races -------------------------------------------------------------------------


async def test_concurrent_lookups_spawn_one_actor() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookups = [
            asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER)) for _ in range(20)
        ]
        # Every lookup has started (tasks start in creation order) before the owner answers.
        asyncio.get_running_loop().call_soon(gate.set)
        actors = await asyncio.gather(*lookups)
        assert len({id(a) for a in actors}) == 1
        assert e.store.owner.calls == 1 and len(e.registry) == 1
        assert e.registry.peek(e.conversation_id) is actors[0]


async def test_a_pending_spawn_answers_other_users_not_found() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        mine = asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER))
        theirs = asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, "intruder"))
        asyncio.get_running_loop().call_soon(gate.set)
        actor = await mine
        with pytest.raises(ConversationNotFound):
            await theirs
        assert actor.owner_id == USER and e.store.owner.calls == 1


async def test_a_failed_spawn_fails_every_waiter_and_the_next_lookup_retries() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        e.store.owner.fail_with(StoreDown("pool exhausted"), times=1)
        lookups = [
            asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER)) for _ in range(5)
        ]
        asyncio.get_running_loop().call_soon(gate.set)
        results = await asyncio.gather(*lookups, return_exceptions=True)
        assert all(isinstance(r, StoreDown) for r in results), results
        assert len(e.registry) == 0
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        assert not actor.stopped and e.store.owner.calls == 2


async def test_an_unknown_conversation_is_not_found_for_every_waiter() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookups = [asyncio.create_task(e.registry.get_or_spawn("nope", USER)) for _ in range(3)]
        asyncio.get_running_loop().call_soon(gate.set)
        results = await asyncio.gather(*lookups, return_exceptions=True)
        assert all(isinstance(r, ConversationNotFound) for r in results), results
        assert len(e.registry) == 0


async def test_a_cancelled_waiter_does_not_cancel_the_spawn() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookups = [
            asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER)) for _ in range(3)
        ]
        await e.store.owner.entered.wait()
        lookups[2].cancel()  # a waiter, not the task running the spawn
        gate.set()
        first, second = await lookups[0], await lookups[1]
        assert first is second and not first.stopped
        with pytest.raises(asyncio.CancelledError):
            await lookups[2]


async def test_cancelling_the_caller_that_spawns_does_not_fail_the_others() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookups = [
            asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER)) for _ in range(3)
        ]
        await e.store.owner.entered.wait()
        lookups[0].cancel()  # the caller whose task runs the spawn
        gate.set()
        results = await asyncio.gather(*lookups[1:], return_exceptions=True)
        assert all(isinstance(r, ConversationActor) for r in results), results


# -- delete during spawn -----------------------------------------------------------------


async def test_delete_before_the_owner_is_read_answers_not_found() -> None:
    async with env() as e:
        async with e.registry.deleting(e.conversation_id):
            with pytest.raises(ConversationNotFound):
                await e.registry.get_or_spawn(e.conversation_id, USER)
            e.store.delete_conversation(e.conversation_id)
        with pytest.raises(ConversationNotFound):
            await e.registry.get_or_spawn(e.conversation_id, USER)
        assert len(e.registry) == 0


async def test_delete_stops_a_running_actor_and_cancels_its_generation() -> None:
    async with env() as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        watcher = await watch(actor)
        hold = Hold()
        e.provider.enqueue("some ", hold, "more", Final())
        result = await actor.send("hi", model=MODEL)
        await hold.reached.wait()
        async with e.registry.deleting(e.conversation_id):
            assert actor.stopped
            with pytest.raises(ConversationNotFound):
                await e.registry.get_or_spawn(e.conversation_id, USER)
            assert e.store.rows[result.assistant_message_id or ""].status == "cancelled"
            e.store.delete_conversation(e.conversation_id)
        assert [ev.type for ev in await watcher.until_closed() if ev.type in TERMINAL] == [
            "cancelled"
        ]
        with pytest.raises(ConversationNotFound):
            await e.registry.get_or_spawn(e.conversation_id, USER)


@pytest.mark.parametrize("spawn_ends", ["inside-the-delete", "after-the-delete"])
async def test_delete_during_spawn_leaves_no_actor(spawn_ends: str) -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookup = asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER))
        await e.store.owner.entered.wait()  # the owner was read: the row still existed
        async with e.registry.deleting(e.conversation_id):
            e.store.delete_conversation(e.conversation_id)
            if spawn_ends == "inside-the-delete":
                gate.set()
                outcome = await asyncio.gather(lookup, return_exceptions=True)
        if spawn_ends == "after-the-delete":
            gate.set()
            outcome = await asyncio.gather(lookup, return_exceptions=True)
        assert e.registry.peek(e.conversation_id) is None
        assert isinstance(outcome[0], ConversationNotFound | ActorStopped), outcome


# -- crash supervision -------------------------------------------------------------------


async def test_a_crashed_actor_is_supervised_and_the_next_lookup_respawns() -> None:
    async with env() as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        watcher = await watch(actor)
        hold = Hold()
        e.provider.enqueue("half ", hold, "rest", Final())
        result = await actor.send("hi", model=MODEL)
        await hold.reached.wait()
        actor.task.cancel()  # the loop dies as an unexpected crash would
        events = await watcher.until_closed()
        terminal = [ev for ev in events if ev.type in TERMINAL]
        assert [ev.type for ev in terminal] == ["error"]
        assert terminal[0].data["code"] == "internal"
        row = e.store.rows[result.assistant_message_id or ""]
        assert (row.status, row.content) == ("error", "half ")
        assert e.registry.crashes == 1 and e.registry.peek(e.conversation_id) is None
        fresh = await e.registry.get_or_spawn(e.conversation_id, USER)
        assert fresh is not actor and fresh.hub.epoch != actor.hub.epoch
        e.provider.enqueue("ok", Final())
        fresh_watch = await watch(fresh)
        await fresh.send("again", model=MODEL)
        assert (await fresh_watch.until_type(*TERMINAL)).type == "done"


class Fatal(BaseException):
    """Not an ``Exception``: escapes the actor's per-command error handling."""


@pytest.mark.parametrize("crash", ["cancelled", "fatal-error"])
async def test_a_crash_during_a_command_answers_its_caller(crash: str) -> None:
    async with env() as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        if crash == "fatal-error":
            e.store.history_switch.fail_with(Fatal())
        gate = e.store.start.block()
        send = asyncio.create_task(actor.send("hi", model=MODEL))
        if crash == "cancelled":
            await e.store.start.entered.wait()
            actor.task.cancel()
        await asyncio.wait({actor.task})
        assert e.registry.crashes == 1
        gate.set()
        done, _ = await asyncio.wait({send}, timeout=0.2)
        if not done:
            send.cancel()  # do not leave it pending past the test
            await asyncio.wait({send})
        assert send in done, "the caller of the crashed command was never answered"
        assert isinstance(send.exception(), ActorStopped | Fatal)


# -- idle stop and close -----------------------------------------------------------------


async def test_an_idle_actor_is_forgotten_and_respawned_with_a_new_epoch() -> None:
    async with env(idle_timeout=0.01) as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        await asyncio.wait_for(asyncio.wait({actor.task}), 2)
        assert actor.stopped and e.registry.peek(e.conversation_id) is None
        assert len(e.registry) == 0 and e.registry.crashes == 0
        fresh = await e.registry.get_or_spawn(e.conversation_id, USER)
        assert fresh is not actor and fresh.hub.epoch != actor.hub.epoch


async def test_a_subscriber_outlives_an_idle_stop_and_the_next_actor_adopts_it() -> None:
    async with env(idle_timeout=0.01) as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        viewer = Watcher()
        viewer.attach(await actor.subscribe(None, viewer.spec(viewer=True)))
        await asyncio.wait_for(asyncio.wait({actor.task}), 2)  # idle stop, subscribed
        assert actor.idled and e.registry.peek(e.conversation_id) is None
        assert e.registry.dormant_count == 1 and viewer.sub is not None
        assert not viewer.sub.closed
        fresh = await e.registry.get_or_spawn(e.conversation_id, USER)
        assert fresh is not actor and fresh.hub is actor.hub  # same log: epoch and seq
        assert e.registry.dormant_count == 0
        e.provider.enqueue("still ", "here", Final())
        await fresh.send("hi", model=MODEL)
        done = await viewer.until_type("done")
        assert done.data["fullText"] == "still here"
        seqs = [ev.seq for ev in viewer.drain()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap across actors
        await fresh.unsubscribe(viewer.sub)


async def test_subscribers_racing_idle_stops_always_end_up_subscribed() -> None:
    """What a transport does (look up, command, look up again on ``ActorStopped``), many
    times around idle stops: every subscriber ends on a live actor."""
    async with env(idle_timeout=0.005) as e:

        async def subscribe() -> ConversationActor:
            for _ in range(10):
                actor = await e.registry.get_or_spawn(e.conversation_id, USER)
                try:
                    sub = await actor.subscribe(None, Watcher().spec(viewer=True))
                except ActorStopped:
                    continue
                await actor.unsubscribe(sub)
                return actor
            raise AssertionError("never subscribed")

        spawned: list[ConversationActor] = []  # held: ids of freed actors are reused
        for _ in range(30):
            actors = await asyncio.gather(*(subscribe() for _ in range(5)))
            spawned.extend(a for a in actors if all(a is not b for b in spawned))
            previous = actors[-1]
            await asyncio.wait_for(asyncio.wait({previous.task}), 2)  # let it idle out
        assert len(spawned) >= 30 and e.registry.crashes == 0


async def test_close_ends_running_generations_as_server_shutdown() -> None:
    async with env() as e:
        actor = await e.registry.get_or_spawn(e.conversation_id, USER)
        watcher = await watch(actor)
        hold = Hold()
        e.provider.enqueue("a", hold, Final())
        result = await actor.send("hi", model=MODEL)
        await hold.reached.wait()
        await e.registry.close()
        events = await watcher.until_closed()
        assert events[-1].type == "error" and events[-1].data["code"] == "server_shutdown"
        assert e.store.rows[result.assistant_message_id or ""].status == "interrupted"
        with pytest.raises(ActorStopped):
            await e.registry.get_or_spawn(e.conversation_id, USER)


async def test_close_during_a_spawn_leaves_no_live_actor() -> None:
    async with env() as e:
        gate = e.store.owner.block()
        lookup = asyncio.create_task(e.registry.get_or_spawn(e.conversation_id, USER))
        await e.store.owner.entered.wait()
        await e.registry.close()
        gate.set()
        outcome = (await asyncio.gather(lookup, return_exceptions=True))[0]
        leaked = isinstance(outcome, ConversationActor) and not outcome.stopped
        if isinstance(outcome, ConversationActor):
            await outcome.stop()  # clean up what close() missed
        assert not leaked, "a live actor was spawned after close()"
        assert isinstance(outcome, ActorStopped), outcome
