"""``ConversationActor`` alone: an in-memory store, a scripted model, no sockets, no database.

Every test waits on something observable -- a hub event, a store call arriving, a model
stream reaching a scripted hold -- never on a sleep. Where a test explores interleavings
it steps the event loop with ``sleep(0)``: that picks an ordering, it does not wait for one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from actors.conversation import ActorDeps, ConversationActor
from actors.event_log import Cursor, EventLog
from actors.flusher import Flusher
from actors.mailbox import ActorStopped, ConversationBusy
from actors.models.base import Final, ModelError, Usage
from actors.retries import RECENT_GENERATIONS, RecentGenerations
from actors.store import ClientMessageTaken, Outcome
from tests.memory_store import (
    TERMINAL,
    Hold,
    MemoryStore,
    Model,
    Script,
    ScriptedProvider,
    Step,
    StoreDown,
    Watcher,
    simple_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")

USER = "user-1"
MODEL = Model()


@dataclass
class Harness:
    store: MemoryStore
    provider: ScriptedProvider
    flusher: Flusher
    deps: ActorDeps
    conversation_id: str
    actor: ConversationActor
    watch: Watcher  # a non-viewer subscriber from before the first command

    def spawn(self) -> ConversationActor:
        """A fresh actor on the same store (as the registry would after a stop)."""
        self.actor = ConversationActor(self.conversation_id, USER, self.deps)
        return self.actor

    def answer_row(self, message_id: str | None) -> tuple[str, str]:
        assert message_id is not None
        row = self.store.row(message_id)
        return row.status, row.content

    def terminal(self) -> list[str]:
        return [e.type for e in self.watch.drain() if e.type in TERMINAL]


@contextlib.asynccontextmanager
async def harness(
    *, idle_timeout: float = 60.0, commit_timeout: float = 1.0, flush_interval: float = 3600.0
) -> AsyncIterator[Harness]:
    store = MemoryStore()
    provider = ScriptedProvider()
    flusher = Flusher(store, flush_interval)
    deps = ActorDeps(
        store=store,
        providers={"scripted": provider},
        build_request=simple_request,
        flusher=flusher,
        idle_timeout=idle_timeout,
        commit_timeout=commit_timeout,
    )
    conversation_id = store.create_conversation(USER)
    actor = ConversationActor(conversation_id, USER, deps)
    watch = Watcher()
    watch.attach(await actor.subscribe(None, watch.spec()))
    h = Harness(store, provider, flusher, deps, conversation_id, actor, watch)
    try:
        yield h
    finally:
        await h.actor.stop()
        await flusher.stop()


def assert_not_leaked(h: Harness, script: Script) -> None:
    """A send that failed closed the model stream it opened early (or never opened it)."""
    assert not script.opened.is_set() or script.closed.is_set()
    if script in h.provider.scripts:
        h.provider.scripts.remove(script)


def one_terminal(h: Harness) -> str:
    terminal = h.terminal()
    assert len(terminal) == 1, h.watch.types()
    return terminal[0]


# -- the ordinary turn -------------------------------------------------------------------


async def test_a_turn_commits_then_publishes_in_order() -> None:
    async with harness() as h:
        h.provider.enqueue("Hello", " world", Final(usage=Usage(output_tokens=2)))
        result = await h.actor.send("hi", model=MODEL)
        done = await h.watch.until_type("done")
        assert h.watch.types() == ["message", "init", "token", "token", "done"]
        assert done.data["fullText"] == "Hello world"
        assert done.data["usage"] == Usage(output_tokens=2).as_json()
        assert h.answer_row(result.assistant_message_id) == ("complete", "Hello world")
        user = h.store.row(result.user_message.id)
        assert (user.role, user.content, user.status) == ("user", "hi", "complete")
        seqs = [e.seq for e in h.watch.drain()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # The next turn sees the first one in its request.
        script = h.provider.enqueue("again", Final())
        await h.actor.send("more", model=MODEL)
        await h.watch.until(lambda e: e.type == "done" and e.data["fullText"] == "again")
        assert script.request is not None
        assert [(t.role, t.content) for t in script.request.contents] == [
            ("user", "hi"),
            ("assistant", "Hello world"),
            ("user", "more"),
        ]


async def test_a_second_send_while_generating_is_busy() -> None:
    async with harness() as h:
        hold = Hold()
        h.provider.enqueue("a", hold, Final())
        await h.actor.send("one", model=MODEL)
        await hold.reached.wait()
        with pytest.raises(ConversationBusy):
            await h.actor.send("two", model=MODEL)
        hold.release.set()
        await h.watch.until_type("done")
        assert len(h.store.rows) == 2


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_before_the_first_token() -> None:
    async with harness() as h:
        hold = Hold()
        script = h.provider.enqueue(hold, "never", Final())
        result = await h.actor.send("hi", model=MODEL)
        await hold.reached.wait()  # the stream is open, nothing came yet
        assert await h.actor.cancel(result.generation_id) is True
        # cancel answers after the terminal state is committed and published
        assert h.watch.types() == ["message", "init", "cancelled"]
        assert h.answer_row(result.assistant_message_id) == ("cancelled", "")
        await script.closed.wait()
        assert script.ended == "closed"
        assert h.actor.generation is None
        assert await h.actor.cancel() is False  # nothing left to cancel


async def test_cancel_mid_stream_keeps_the_partial_text() -> None:
    async with harness() as h:
        hold = Hold()
        h.provider.enqueue("one ", "two ", hold, "three", Final())
        result = await h.actor.send("hi", model=MODEL)
        await hold.reached.wait()
        assert await h.actor.cancel("some-other-generation") is False  # stale: ignored
        assert await h.actor.cancel(result.generation_id) is True
        assert h.watch.tokens() == "one two "
        assert h.answer_row(result.assistant_message_id) == ("cancelled", "one two ")
        assert one_terminal(h) == "cancelled"


async def test_cancel_queued_behind_the_send_stops_that_generation() -> None:
    """The cancel reaches the mailbox while the turn is still being committed."""
    async with harness() as h:
        hold = Hold()
        script = h.provider.enqueue("a", hold, "b", Final())
        gate = h.store.start.block()
        send = asyncio.create_task(h.actor.send("hi", model=MODEL))
        await h.store.start.entered.wait()
        cancel = asyncio.create_task(h.actor.cancel())
        # Tasks start in creation order: the cancel is queued before the commit returns.
        asyncio.get_running_loop().call_soon(gate.set)
        result = await send
        assert await cancel is True
        assert one_terminal(h) == "cancelled"
        status, content = h.answer_row(result.assistant_message_id)
        assert status == "cancelled" and content == h.watch.tokens()
        assert content in ("", "a")
        await script.closed.wait()
        assert not hold.release.is_set()


async def test_cancel_queued_behind_a_fast_send_agrees_with_the_outcome() -> None:
    """A model with every chunk buffered may finish before the queued cancel is handled:
    then the cancel answers ``False`` and the turn is ``done`` -- never a mix."""
    async with harness() as h:
        h.provider.enqueue("a", "b", Final())
        gate = h.store.start.block()
        send = asyncio.create_task(h.actor.send("hi", model=MODEL))
        await h.store.start.entered.wait()
        cancel = asyncio.create_task(h.actor.cancel())
        asyncio.get_running_loop().call_soon(gate.set)
        result = await send
        cancelled = await cancel
        await h.watch.until_type(*TERMINAL)
        assert one_terminal(h) == ("cancelled" if cancelled else "done")
        status, content = h.answer_row(result.assistant_message_id)
        assert status == ("cancelled" if cancelled else "complete")
        assert content == h.watch.tokens()


async def test_cancel_while_done_is_being_committed_is_too_late() -> None:
    async with harness() as h:
        h.provider.enqueue("all of it", Final())
        gate = h.store.finish_switch.block()
        result = await h.actor.send("hi", model=MODEL)
        await h.store.finish_switch.entered.wait()  # the outcome is fixed: `complete`
        assert await h.actor.cancel(result.generation_id) is False
        gate.set()
        await h.watch.until_type("done")
        assert one_terminal(h) == "done"
        assert h.answer_row(result.assistant_message_id) == ("complete", "all of it")
        assert await h.actor.cancel(result.generation_id) is False  # after done


@pytest.mark.parametrize("steps", range(8))
async def test_cancel_racing_done_agrees_with_what_is_stored(steps: int) -> None:
    """The last chunk and a cancel arrive together, in every order the loop can pick:
    exactly one terminal event, the cancel's answer matches it, the row matches both."""
    async with harness() as h:
        hold = Hold()
        h.provider.enqueue("x", "y", hold, "z", Final())
        result = await h.actor.send("hi", model=MODEL)
        await hold.reached.wait()
        hold.release.set()
        for _ in range(steps):
            await asyncio.sleep(0)
        cancelled = await h.actor.cancel(result.generation_id)
        await h.watch.until_type(*TERMINAL)
        terminal = one_terminal(h)
        assert terminal == ("cancelled" if cancelled else "done")
        status, content = h.answer_row(result.assistant_message_id)
        assert status == ("cancelled" if cancelled else "complete")
        assert content == h.watch.tokens()
        if not cancelled:
            assert content == "xyz"


# -- stop ----------------------------------------------------------------------------------


async def test_shutdown_while_the_turn_is_being_committed() -> None:
    async with harness() as h:
        script = h.provider.enqueue("a", Hold(), Final())
        gate = h.store.start.block()
        send = asyncio.create_task(h.actor.send("hi", model=MODEL))
        await h.store.start.entered.wait()
        stop = asyncio.create_task(h.actor.stop("shutdown"))
        asyncio.get_running_loop().call_soon(gate.set)  # after the stop is queued
        result = await send
        await stop
        assert h.actor.stopped
        events = await h.watch.until_closed()
        types = [e.type for e in events]
        assert types[:2] == ["message", "init"] and types[-1] == "error", types
        assert events[-1].data["code"] == "server_shutdown"
        status, content = h.answer_row(result.assistant_message_id)
        assert status == "interrupted" and content == h.watch.tokens()
        assert h.store.row(result.user_message.id).status == "complete"
        await script.closed.wait()
        with pytest.raises(ActorStopped):
            await h.actor.send("after", model=MODEL)


async def test_shutdown_while_the_answer_is_being_stored_waits_for_it() -> None:
    """The outcome is fixed once concluding starts: a stop then waits for the terminal
    write and the terminal event, and only then closes the log."""
    async with harness() as h:
        h.provider.enqueue("whole", Final())
        gate = h.store.finish_switch.block()
        result = await h.actor.send("hi", model=MODEL)
        await h.store.finish_switch.entered.wait()
        stop = asyncio.create_task(h.actor.stop("shutdown"))
        asyncio.get_running_loop().call_soon(gate.set)
        await stop
        events = await h.watch.until_closed()
        assert [e.type for e in events if e.type in TERMINAL] == ["done"]
        assert events[-1].type == "done"
        assert h.answer_row(result.assistant_message_id) == ("complete", "whole")


async def test_shutdown_while_the_commit_fails_leaves_nothing_behind() -> None:
    async with harness() as h:
        script = h.provider.enqueue("a", Final())
        gate = h.store.start.block()
        h.store.start.fail_with(StoreDown("disk full"))
        send = asyncio.create_task(h.actor.send("hi", model=MODEL))
        await h.store.start.entered.wait()
        stop = asyncio.create_task(h.actor.stop("shutdown"))
        asyncio.get_running_loop().call_soon(gate.set)
        with pytest.raises(StoreDown):
            await send
        await stop
        assert await h.watch.until_closed() == []
        assert h.store.rows == {}
        await script.closed.wait()  # the model stream opened early is closed, not leaked


async def test_a_failed_commit_fails_that_send_only() -> None:
    async with harness() as h:
        first = h.provider.enqueue("lost", Final())
        h.store.start.fail_with(StoreDown("busy"), times=1)
        with pytest.raises(StoreDown):
            await h.actor.send("one", model=MODEL)
        assert_not_leaked(h, first)
        h.provider.enqueue("ok", Final())
        await h.actor.send("two", model=MODEL)
        await h.watch.until_type("done")
        assert [m.content for m in h.store.rows.values()] == ["two", "ok"]
        assert h.watch.types() == ["message", "init", "token", "done"]


# -- the terminal write fails ------------------------------------------------------------


async def test_store_failure_while_concluding_retries_then_errors_and_hands_over() -> None:
    async with harness(commit_timeout=0.3) as h:
        h.provider.enqueue("a", "b", Final())
        h.store.finish_switch.fail_with(StoreDown("database is locked"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await h.actor.send("hi", model=MODEL)
        error = await h.watch.until_type(*TERMINAL)
        elapsed = loop.time() - started
        assert error.type == "error" and error.data["code"] == "internal"
        assert one_terminal(h) == "error"  # never `done` for an answer that is not stored
        assert h.store.finish_switch.calls >= 2  # retried with backoff...
        assert elapsed < 0.3 + 0.25  # ...within commit_timeout
        message_id = result.assistant_message_id
        assert message_id is not None
        # Handed to the janitor: stored `error` with the whole text once writes work.
        assert h.store.later == [
            (
                message_id,
                Outcome(
                    status="error",
                    content="ab",
                    finish_reason="STOP",
                    usage=Usage().as_json(),
                    citations=[],
                ),
            )
        ]
        assert h.answer_row(message_id) == ("streaming", "")
        h.store.finish_switch.heal()
        await h.store.run_janitor()
        assert h.answer_row(message_id) == ("error", "ab")
        # The conversation is not left busy.
        h.provider.enqueue("next", Final())
        await h.actor.send("again", model=MODEL)
        await h.watch.until(lambda e: e.type == "done" and e.data["fullText"] == "next")


async def test_a_transient_terminal_write_failure_is_retried() -> None:
    async with harness(commit_timeout=5.0) as h:
        h.provider.enqueue("fine", Final())
        h.store.finish_switch.fail_with(StoreDown("locked"), times=2)
        result = await h.actor.send("hi", model=MODEL)
        await h.watch.until_type(*TERMINAL)
        assert one_terminal(h) == "done"
        assert h.store.finish_switch.calls == 3
        assert h.store.later == []
        assert h.answer_row(result.assistant_message_id) == ("complete", "fine")


# -- the model fails -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "code", "stored"),
    [
        pytest.param([ModelError("upstream_unavailable", "down")], "upstream_unavailable", "",
                     id="model-error-before-any-token"),
        pytest.param(["partial ", "answer ", ModelError("rate_limited", "slow")], "rate_limited",
                     "partial answer ", id="model-error-after-tokens"),
        pytest.param([RuntimeError("sdk bug")], "internal", "", id="crash-before-any-token"),
        pytest.param(["part", RuntimeError("sdk bug")], "internal", "part",
                     id="crash-after-tokens"),
        pytest.param(["no final"], "internal", "no final", id="stream-ends-without-final"),
        pytest.param([], "internal", "", id="empty-stream"),
    ],
)  # fmt: skip
async def test_a_failing_provider_ends_the_turn_as_error(
    steps: list[Step], code: str, stored: str
) -> None:
    async with harness() as h:
        script = h.provider.enqueue(*steps)
        result = await h.actor.send("hi", model=MODEL)
        error = await h.watch.until_type(*TERMINAL)
        assert error.type == "error" and error.data["code"] == code
        assert h.watch.tokens() == stored
        assert h.answer_row(result.assistant_message_id) == ("error", stored)
        await script.closed.wait()
        # The next turn works.
        h.provider.enqueue("ok", Final())
        await h.actor.send("again", model=MODEL)
        await h.watch.until_type("done")


async def test_a_request_that_cannot_be_built_ends_as_error() -> None:
    async with harness() as h:
        result = await h.actor.send("too long", model=MODEL)
        error = await h.watch.until_type(*TERMINAL)
        assert error.data["code"] == "bad_request"
        assert h.answer_row(result.assistant_message_id) == ("error", "")
        assert h.provider.played == []


# -- idle stop -------------------------------------------------------------------------------


async def test_idle_stop_racing_a_subscriber() -> None:
    """A subscribe that arrives around the idle timeout is either served by the live
    actor or refused with ``ActorStopped`` by one that has stopped; it never hangs, and a
    served subscription outlives the idle stop (its log lives on, it is not closed)."""
    idle = 0.01
    outcomes: list[str] = []
    loop = asyncio.get_running_loop()
    for steps in range(14):
        async with harness(idle_timeout=idle) as h:
            await h.actor.stop()
            h.spawn()  # fresh actor: its first step arms the idle timer
            fired = asyncio.Event()
            # Runs right after that first step: a timer due with the actor's own.
            loop.call_soon(lambda ev=fired: loop.call_later(idle, ev.set))  # type: ignore[misc]
            await fired.wait()
            for _ in range(steps):
                await asyncio.sleep(0)
            viewer = Watcher()
            try:
                sub = await asyncio.wait_for(h.actor.subscribe(None, viewer.spec(viewer=True)), 2)
            except ActorStopped:
                outcomes.append("stopped")
                assert h.actor.stopped and h.actor.idled
                await asyncio.wait_for(asyncio.wait({h.actor.task}), 2)
                continue
            outcomes.append("served")
            assert h.actor.viewers == 1
            await asyncio.wait_for(asyncio.wait({h.actor.task}), 2)  # idles out, viewer or not
            assert h.actor.stopped and h.actor.idled
            assert not sub.closed  # the log lives on for the next actor to adopt
    assert "served" in outcomes and "stopped" in outcomes, outcomes


async def test_an_idle_actor_with_a_running_generation_stays() -> None:
    async with harness(idle_timeout=0.01) as h:
        await h.actor.unsubscribe(h.watch.sub)  # type: ignore[arg-type]
        hold = Hold()
        h.provider.enqueue("a", hold, Final())
        result = await h.actor.send("hi", model=MODEL)
        await hold.reached.wait()
        # A negative check: five idle timeouts pass and the actor stays.
        done, _ = await asyncio.wait({h.actor.task}, timeout=0.05)
        assert not done
        hold.release.set()
        await asyncio.wait_for(asyncio.wait({h.actor.task}), 2)  # then idles out
        assert h.answer_row(result.assistant_message_id) == ("complete", "a")


# -- idempotent retry ------------------------------------------------------------------


async def test_retry_while_generating_joins_the_same_generation() -> None:
    async with harness() as h:
        hold = Hold()
        h.provider.enqueue("first ", hold, "second", Final())
        original = await h.actor.send("hi", model=MODEL, client_message_id="key-1")
        await hold.reached.wait()
        late = Watcher()
        retried = await h.actor.send(
            "hi", model=MODEL, client_message_id="key-1", subscribe=late.spec()
        )
        late.attach(retried.subscription)  # type: ignore[arg-type]
        assert retried.retried and retried.generation_id == original.generation_id
        assert retried.assistant_message_id == original.assistant_message_id
        assert retried.answer is None  # still running: follow the stream
        assert [e.type for e in late.events] == ["message", "init", "token"]  # replayed
        hold.release.set()
        done = await late.until_type("done")
        assert done.data["fullText"] == "first second"
        assert [e.seq for e in late.drain()] == [e.seq for e in h.watch.drain()]
        assert len(h.store.rows) == 2 and len(h.provider.played) == 1


async def test_a_double_submit_during_the_commit_starts_one_turn() -> None:
    async with harness() as h:
        h.provider.enqueue("only once", Final())
        gate = h.store.start.block()
        first = asyncio.create_task(h.actor.send("hi", model=MODEL, client_message_id="k"))
        await h.store.start.entered.wait()
        second = asyncio.create_task(h.actor.send("hi", model=MODEL, client_message_id="k"))
        asyncio.get_running_loop().call_soon(gate.set)
        one, two = await first, await second
        assert not one.retried and two.retried
        assert two.generation_id == one.generation_id
        await h.watch.until_type("done")
        assert h.store.start.calls == 1 and len(h.store.rows) == 2
        assert h.watch.types().count("message") == 1


async def test_retry_after_done_returns_the_stored_answer_and_replays() -> None:
    async with harness() as h:
        h.provider.enqueue("kept", Final())
        original = await h.actor.send("hi", model=MODEL, client_message_id="key")
        await h.watch.until_type("done")
        again = Watcher()
        retried = await h.actor.send(
            "hi", model=MODEL, client_message_id="key", subscribe=again.spec()
        )
        assert retried.retried and retried.generation_id == original.generation_id
        assert retried.answer is not None
        assert (retried.answer.status, retried.answer.content) == ("complete", "kept")
        again.attach(retried.subscription)  # type: ignore[arg-type]
        assert [e.type for e in again.events] == ["message", "init", "token", "done"]
        assert [e.seq for e in again.events] == [e.seq for e in h.watch.drain()]
        assert len(h.store.rows) == 2 and len(h.provider.played) == 1


async def test_retry_in_a_respawned_actor_reports_a_lost_answer_as_interrupted() -> None:
    async with harness() as h:
        hold = Hold()
        h.provider.enqueue("half", hold, Final())
        original = await h.actor.send("hi", model=MODEL, client_message_id="key")
        await hold.reached.wait()
        h.actor.task.cancel()  # the actor dies; nobody concludes its generation
        await asyncio.wait({h.actor.task})
        h.spawn()
        retried = await h.actor.send("hi", model=MODEL, client_message_id="key")
        assert retried.retried and retried.generation_id == original.generation_id
        assert retried.subscription is None
        assert retried.answer is not None and retried.answer.status == "interrupted"
        assert len(h.store.rows) == 2 and len(h.provider.played) == 1
        hold.release.set()
        assert original.actor is not None
        await original.actor.crashed()  # what the registry would do


async def test_a_key_taken_in_another_conversation_starts_nothing() -> None:
    async with harness() as h:
        other = h.store.create_conversation(USER)
        h.store.key_owner[(USER, "shared")] = other
        script = h.provider.enqueue("no", Final())
        with pytest.raises(ClientMessageTaken):
            await h.actor.send("hi", model=MODEL, client_message_id="shared")
        assert_not_leaked(h, script)
        assert h.store.rows == {} and h.actor.generation is None
        assert h.watch.types() == []


async def test_recent_generations_keep_the_last_ones_and_their_turns_in_the_log() -> None:
    hub = EventLog("c")
    recent = RecentGenerations()
    for n in range(RECENT_GENERATIONS + 1):
        recent.remember(f"g{n}", hub.last_seq)
        hub.append("message", {"n": n})
        hub.append("done", {"n": n})
    assert recent.replay_cursor(hub, "g0", running=False) is None  # forgotten: the oldest
    cursor = recent.replay_cursor(hub, f"g{RECENT_GENERATIONS}", running=False)
    assert cursor == Cursor(hub.epoch, hub.last_seq - 2)
    recent.remember("live", hub.last_seq)
    hub.append("message", {})
    assert recent.replay_cursor(hub, "live", running=False) is None  # not ended, not running
    assert recent.replay_cursor(hub, "live", running=True) == Cursor(hub.epoch, hub.last_seq - 1)
