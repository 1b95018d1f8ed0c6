"""``Flusher`` alone: one ``append_partials`` call per interval for every dirty answer
(each carrying only what the answer gained since its last stored write), a failed flush
retried at the next interval, nothing written for untracked answers.

The store is the in-memory one; tests wait for its ``append_partials`` calls to arrive.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from actors.flusher import Flusher
from actors.store import NewGeneration, Outcome
from tests.memory_store import MemoryStore, StoreDown

pytestmark = pytest.mark.asyncio(loop_scope="function")

INTERVAL = 0.02


@dataclass
class Answer:
    """What the flusher reads of a generation (``actors.flusher.Streaming``)."""

    message_id: str
    parts: list[str]
    dirty: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def token(self, text: str) -> None:
        self.parts.append(text)
        self.dirty = True


async def streaming_answers(store: MemoryStore, n: int) -> list[Answer]:
    conversation_id = store.create_conversation()
    answers = []
    for i in range(n):
        _, answer = await store.start_generation(
            NewGeneration(
                conversation_id, f"q{i}", generation_id=f"g{i}", client_message_id=None, model="m"
            )
        )
        answers.append(Answer(answer.id, []))
    return answers


async def test_one_call_per_interval_carries_every_dirty_answer() -> None:
    store = MemoryStore()
    flusher = Flusher(store, INTERVAL)
    answers = await streaming_answers(store, 3)
    try:
        for answer in answers:
            for i in range(50):  # many tokens each: still one write per interval
                answer.token(f"t{i} ")
            flusher.track(answer)
        await store.flush.wait_calls(1)
        assert store.flushes == [[(a.message_id, a.text) for a in answers]]
        assert not any(a.dirty for a in answers)
        assert [store.row(a.message_id).content for a in answers] == [a.text for a in answers]
        assert flusher.batches == 1
        # Only what changed since is written next time, still in one call.
        answers[0].token("more")
        answers[2].token("more")
        await store.flush.wait_calls(2)
        assert store.flushes[1] == [(answers[0].message_id, answers[0].text),
                                    (answers[2].message_id, answers[2].text)]  # fmt: skip
        # ... and only the new text of each: the stored prefix is not sent again.
        kept = [len(answers[0].text) - 4, len(answers[2].text) - 4]
        assert store.appends[1] == [
            (answers[0].message_id, kept[0], "more"),
            (answers[2].message_id, kept[1], "more"),
        ]
        answers[1].token("late")
        await store.flush.wait_calls(3)
        assert store.flushes[2] == [(answers[1].message_id, answers[1].text)]
        at = store.flush.called_at
        gaps = [b - a for a, b in itertools.pairwise(at)]
        assert all(gap >= INTERVAL * 0.9 for gap in gaps), gaps
    finally:
        await flusher.stop()


async def test_a_failed_flush_is_retried_at_the_next_interval() -> None:
    store = MemoryStore()
    flusher = Flusher(store, INTERVAL)
    answers = await streaming_answers(store, 2)
    store.flush.fail_with(StoreDown("database is locked"), times=1)
    try:
        for answer in answers:
            answer.token("first ")
            flusher.track(answer)
        await store.flush.wait_calls(1)
        answers[0].token("second")  # arrives while the failed write is being retried
        await store.flush.wait_calls(2)
        assert store.flushes == [[(a.message_id, a.text) for a in answers]]
        assert [store.row(a.message_id).content for a in answers] == ["first second", "first "]
        assert flusher.batches == 1  # the failed attempt is not counted
    finally:
        await flusher.stop()


async def test_a_failed_flush_restores_the_dirty_flags() -> None:
    store = MemoryStore()
    flusher = Flusher(store, 3600.0)  # driven by hand: flush() is the interval's body
    answers = await streaming_answers(store, 2)
    for answer in answers:
        answer.token("x")
        flusher.track(answer)
    store.flush.fail_with(StoreDown("locked"))
    await flusher.flush()
    assert all(a.dirty for a in answers) and flusher.batches == 0
    assert store.flushes == []
    store.flush.heal()
    await flusher.flush()
    assert not any(a.dirty for a in answers) and flusher.batches == 1
    await flusher.flush()  # nothing dirty: no write
    assert store.flush.calls == 2
    await flusher.stop()


async def test_untracked_answers_are_not_written() -> None:
    store = MemoryStore()
    flusher = Flusher(store, 3600.0)
    kept, gone = await streaming_answers(store, 2)
    for answer in (kept, gone):
        answer.token("text")
        flusher.track(answer)
    flusher.untrack(gone)
    await flusher.flush()
    assert store.flushes == [[(kept.message_id, "text")]]
    assert gone.dirty  # never taken
    flusher.untrack(gone)  # twice is harmless
    await flusher.stop()


async def test_the_interval_task_ends_with_the_last_answer_and_restarts() -> None:
    store = MemoryStore()
    flusher = Flusher(store, INTERVAL)
    (first, second) = await streaming_answers(store, 2)
    first.token("a")
    flusher.track(first)
    await store.flush.wait_calls(1)
    flusher.untrack(first)
    first.token("b")  # untracked: never written again
    second.token("c")
    flusher.track(second)
    await store.flush.wait_calls(2)
    assert store.flushes == [[(first.message_id, "a")], [(second.message_id, "c")]]
    await flusher.stop()


async def test_a_flush_after_the_terminal_state_changes_nothing() -> None:
    store = MemoryStore()
    flusher = Flusher(store, 3600.0)
    (answer,) = await streaming_answers(store, 1)
    answer.token("partial")
    flusher.track(answer)
    await store.finish(answer.message_id, Outcome(status="cancelled", content="partial"))
    answer.token(" later")
    await flusher.flush()
    assert store.flushes == [[(answer.message_id, "partial later")]]
    assert (store.row(answer.message_id).status, store.row(answer.message_id).content) == (
        "cancelled",
        "partial",
    )
    await flusher.stop()
