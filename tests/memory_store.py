"""An in-memory ``ConversationStore`` and a scripted ``ModelProvider`` for actor unit tests.

Both are real implementations of the protocols in ``actors/store.py`` and
``actors/models/base.py`` -- no sockets, no database -- with switches a test flips to make
a store method fail or wait on an :class:`asyncio.Event`, and model streams that block
between chunks until the test releases them. Tests wait on the events these expose
(``Switch.entered``, ``Hold.reached``, ``Watcher.until``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.context import with_instructions
from actors.event_log import Event, EventLog, Subscription
from actors.mailbox import SubscribeSpec
from actors.models.base import (
    ChatTurn,
    Final,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
)
from actors.store import (
    ClientMessageTaken,
    ContinuedGeneration,
    Instructions,
    NewGeneration,
    Outcome,
    StoredMessage,
)

# -- switches ---------------------------------------------------------------------------


class Switch:
    """Makes one store method wait and/or fail.

    Every call first counts itself (``calls``, ``entered``), then waits for ``gate`` when
    one is set, then raises ``fail`` while ``failures`` allows (``None``: every call).
    """

    def __init__(self) -> None:
        self.calls = 0
        self.called_at: list[float] = []  # loop time of each call
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self.failures: int | None = None
        self._changed = asyncio.Event()

    def block(self) -> asyncio.Event:
        """Make calls wait until the returned event is set."""
        self.gate = asyncio.Event()
        return self.gate

    def fail_with(self, exc: BaseException, times: int | None = None) -> None:
        self.fail = exc
        self.failures = times

    def heal(self) -> None:
        self.fail = None
        self.failures = None
        if self.gate is not None:
            self.gate.set()
        self.gate = None

    async def wait_calls(self, n: int) -> None:
        """Until at least ``n`` calls have arrived."""
        while self.calls < n:
            self._changed.clear()
            await self._changed.wait()

    async def check(self) -> None:
        self.calls += 1
        self.called_at.append(asyncio.get_running_loop().time())
        self.entered.set()
        self._changed.set()
        gate = self.gate
        if gate is not None:
            await gate.wait()
        if self.fail is not None and (self.failures is None or self.failures > 0):
            if self.failures is not None:
                self.failures -= 1
            raise self.fail


class StoreDown(Exception):
    """What the switches raise by default: the database refused a write."""


# -- the store -----------------------------------------------------------------------------


_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


class MemoryStore:
    """``ConversationStore`` over dicts, with the semantics of ``server/storage/chat_store.py``.

    Rows are copied in and out, so the actor mutating a returned message never changes
    what is "stored". ``finish_later`` queues the outcome (the janitor); the test runs
    the janitor with :meth:`run_janitor`.
    """

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}  # conversation id → user id
        self.rows: dict[str, StoredMessage] = {}  # message id → row, in insertion order
        self.key_owner: dict[tuple[str, str], str] = {}  # (user, clientMessageId) → conv
        #: Each ``append_partials`` call as sent: ``(message id, chars kept, new text)``.
        self.appends: list[list[tuple[str, int, str]]] = []
        #: Each ``append_partials`` call as ``(message id, the answer's text after it)``.
        self.flushes: list[list[tuple[str, str]]] = []
        self.finished: list[tuple[str, Outcome]] = []
        self.later: list[tuple[str, Outcome]] = []
        self.leaves: dict[str, str] = {}  # conversation id → active leaf
        self.user_instructions: dict[str, str] = {}  # user id → their instructions
        self.conversation_instructions: dict[str, str] = {}  # conversation id → its own
        self.attachment_bytes: dict[str, bytes] = {}  # attachment id → its bytes
        self.owner = Switch()
        self.history_switch = Switch()
        self.start = Switch()
        self.flush = Switch()
        self.finish_switch = Switch()
        self._clock = datetime(2026, 11, 30, tzinfo=UTC)

    # -- set-up helpers for tests
    def create_conversation(self, user_id: str = "user-1", conversation_id: str = "") -> str:
        conversation_id = conversation_id or _new_id("conv-")
        self.owners[conversation_id] = user_id
        return conversation_id

    def delete_conversation(self, conversation_id: str) -> None:
        self.owners.pop(conversation_id, None)
        for message_id in [m.id for m in self.messages(conversation_id)]:
            del self.rows[message_id]
        for key, value in list(self.key_owner.items()):
            if value == conversation_id:
                del self.key_owner[key]

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        return [m for m in self.rows.values() if m.conversation_id == conversation_id]

    def row(self, message_id: str) -> StoredMessage:
        return self.rows[message_id]

    def _now(self) -> datetime:
        self._clock += timedelta(milliseconds=1)
        return self._clock

    # -- ConversationStore
    async def conversation_owner(self, conversation_id: str) -> str | None:
        owner = self.owners.get(conversation_id)  # read first: a slow answer may be stale
        await self.owner.check()
        return owner

    async def history(self, conversation_id: str) -> list[StoredMessage]:
        await self.history_switch.check()
        return [replace(m) for m in self.messages(conversation_id)]

    async def find_client_message(
        self, conversation_id: str, client_message_id: str
    ) -> tuple[StoredMessage, StoredMessage | None] | None:
        keyed = next(
            (m for m in self.messages(conversation_id) if m.client_message_id == client_message_id),
            None,
        )
        if keyed is None:
            return None
        if keyed.role == "assistant":  # a regenerate's or continue's key
            parent = self.rows.get(keyed.parent_id or "")
            return None if parent is None else (replace(parent), replace(keyed))
        user = keyed
        answer = next(
            (
                m
                for m in self.messages(conversation_id)
                if m.role == "assistant" and m.generation_id == user.generation_id
            ),
            None,
        )
        return replace(user), None if answer is None else replace(answer)

    async def start_generation(self, turn: NewGeneration) -> tuple[StoredMessage, StoredMessage]:
        await self.start.check()
        if turn.conversation_id not in self.owners:
            raise StoreDown(f"foreign key: no conversation {turn.conversation_id}")
        owner = self.owners[turn.conversation_id]
        if turn.client_message_id is not None:
            key = (owner, turn.client_message_id)
            if self.key_owner.get(key) is not None:
                raise ClientMessageTaken(turn.client_message_id)
            self.key_owner[key] = turn.conversation_id
        user, answer = turn.rows(lambda: _new_id("msg-"), self._now)
        if turn.answers is None:
            self.rows[user.id] = replace(user)
        self.rows[answer.id] = replace(answer)
        self.leaves[turn.conversation_id] = answer.id
        return user, answer

    async def continue_generation(self, turn: ContinuedGeneration) -> None:
        await self.start.check()
        owner = self.owners[turn.conversation_id]
        row = self.rows[turn.message_id]
        if turn.client_message_id is not None:
            key = (owner, turn.client_message_id)
            if self.key_owner.get(key) is not None:
                raise ClientMessageTaken(turn.client_message_id)
            self.key_owner[key] = turn.conversation_id
            row.client_message_id = turn.client_message_id
        row.status = "streaming"
        row.generation_id = turn.generation_id
        row.finish_reason = None
        self.leaves[turn.conversation_id] = row.id

    async def instructions(self, conversation_id: str) -> Instructions:
        owner = self.owners.get(conversation_id)
        user = None if owner is None else self.user_instructions.get(owner)
        return Instructions(
            user=user, conversation=self.conversation_instructions.get(conversation_id)
        )

    def instructions_changed(self) -> None:
        pass  # nothing remembered: every read is of the dicts

    async def attachment_data(self, attachment_ids: Sequence[str]) -> dict[str, bytes]:
        return {i: self.attachment_bytes[i] for i in attachment_ids if i in self.attachment_bytes}

    async def active_leaf(self, conversation_id: str) -> str | None:
        return self.leaves.get(conversation_id)

    async def set_active_leaf(self, conversation_id: str, message_id: str) -> None:
        await self.start.check()
        self.leaves[conversation_id] = message_id

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None:
        await self.flush.check()
        self.appends.append(list(batch))
        written: list[tuple[str, str]] = []
        for message_id, chars, suffix in batch:
            row = self.rows.get(message_id)
            if row is None:
                continue
            text = row.content[:chars] + suffix
            written.append((message_id, text))
            if row.status == "streaming":
                row.content = text
        self.flushes.append(written)

    async def finish(self, message_id: str, outcome: Outcome) -> None:
        await self.finish_switch.check()
        self._write_outcome(message_id, outcome)

    def _write_outcome(self, message_id: str, outcome: Outcome) -> None:
        self.finished.append((message_id, outcome))
        row = self.rows.get(message_id)
        if row is None:
            return
        row.status = outcome.status
        row.content = outcome.content
        row.finish_reason = outcome.finish_reason
        row.usage = outcome.usage
        row.citations = outcome.citations
        row.tools = outcome.tools

    def finish_later(self, message_id: str, outcome: Outcome) -> None:
        self.later.append((message_id, outcome))

    async def run_janitor(self) -> None:
        """Store every outcome left by ``finish_later`` (the database takes writes again)."""
        while self.later:
            message_id, outcome = self.later.pop(0)
            self._write_outcome(message_id, outcome)

    async def interrupt_streaming(self, message_ids: Sequence[str] | None = None) -> int:
        count = 0
        for row in self.rows.values():
            if row.status == "streaming" and (message_ids is None or row.id in message_ids):
                row.status = "interrupted"
                count += 1
        return count

    async def interrupt_orphans(self, conversation_id: str, fence: int) -> list[tuple[str, str]]:
        closed = []
        for row in self.messages(conversation_id):
            if row.status == "streaming":
                row.status = "interrupted"
                closed.append((row.id, row.generation_id or ""))
        return closed

    async def streaming_conversations(self) -> list[str]:
        return sorted({r.conversation_id for r in self.rows.values() if r.status == "streaming"})


# -- the scripted model -----------------------------------------------------------------


class Hold:
    """A point in a scripted stream: the stream sets ``reached`` and waits for ``release``."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()


Step = ModelEvent | Hold | BaseException | str


@dataclass
class Script:
    """One scripted model stream. ``str`` steps are text deltas, exceptions are raised."""

    steps: list[Step] = field(default_factory=lambda: ["Hello", " world", Final()])
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    request: ModelRequest | None = None
    #: How the stream ended: "exhausted", "raised" or "closed" (stopped by the consumer).
    ended: str = ""


class ScriptedProvider:
    """``ModelProvider`` that plays queued :class:`Script` s, one per stream."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.played: list[Script] = []

    def enqueue(self, *steps: Step) -> Script:
        script = Script(list(steps))
        self.scripts.append(script)
        return script

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        script = self.scripts.pop(0) if self.scripts else Script()
        script.request = request
        self.played.append(script)
        return self._play(script)

    async def _play(self, script: Script) -> AsyncIterator[ModelEvent]:
        script.opened.set()
        try:
            for step in script.steps:
                if isinstance(step, Hold):
                    step.reached.set()
                    await step.release.wait()
                elif isinstance(step, BaseException):
                    script.ended = "raised"
                    raise step
                elif isinstance(step, str):
                    yield TextDelta(step)
                else:
                    yield step
            script.ended = "exhausted"
        except (GeneratorExit, asyncio.CancelledError):
            script.ended = "closed"
            raise
        finally:
            script.closed.set()

    async def count_tokens(self, request: ModelRequest) -> int | None:
        return None


@dataclass(frozen=True)
class Model:
    """A catalog entry as the actor sees it (``ModelSpec``)."""

    id: str = "scripted-1"
    provider: str = "scripted"


async def simple_request(
    *,
    history: Sequence[ChatTurn],
    model: Any,
    tools: tuple[str, ...] = (),
    instructions: Instructions | None = None,
    provider: Any = None,
) -> ModelRequest:
    """A ``RequestBuilder`` without compression: every turn verbatim; the system
    instruction is only the instructions (:func:`actors.context.with_instructions` on an
    empty prompt)."""
    if history and history[-1].content == "too long":
        raise ModelError("bad_request", "message too long")
    system = with_instructions("", instructions).strip()
    return ModelRequest(model=model.id, system=system, contents=tuple(history), tools=tools)


# -- reading a hub -----------------------------------------------------------------------


class Watcher:
    """Collects what one subscription receives; tests wait on it with :meth:`until`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.woken = asyncio.Event()
        self.sub: Subscription | None = None

    def spec(self, *, viewer: bool = False) -> SubscribeSpec:
        return SubscribeSpec(notify=self.woken.set, direct=self._direct, viewer=viewer)

    def _direct(self, event: Event) -> bool:
        """Every live event as it is appended: tokens are never merged for a watcher."""
        self.events.append(event)
        self.woken.set()
        return True

    def attach(self, sub: Subscription) -> Watcher:
        self.sub = sub
        self.events.extend(sub.take())
        return self

    @classmethod
    def on(cls, hub: EventLog) -> Watcher:
        watcher = cls()
        return watcher.attach(hub.subscribe(None, notify=watcher.woken.set, direct=watcher._direct))

    def drain(self) -> list[Event]:
        assert self.sub is not None
        self.events.extend(self.sub.take())
        return self.events

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first collected event matching ``predicate``, waiting for it to arrive."""

        async def scan() -> Event:
            seen = 0
            while True:
                self.drain()
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                assert self.sub is not None
                if self.sub.closed:
                    raise AssertionError(f"closed before a match: {self.types()}")
                self.woken.clear()
                await self.woken.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def until_type(self, *types: str, timeout: float = 5.0) -> Event:
        return await self.until(lambda e: e.type in types, timeout)

    async def until_closed(self, timeout: float = 5.0) -> list[Event]:
        async def wait() -> list[Event]:
            assert self.sub is not None
            while not self.sub.closed:
                self.woken.clear()
                self.drain()
                if self.sub.closed:
                    break
                await self.woken.wait()
            return self.drain()

        return await asyncio.wait_for(wait(), timeout)

    def types(self) -> list[str]:
        return [e.type for e in self.drain()]

    def of(self, *types: str) -> list[Event]:
        return [e for e in self.drain() if e.type in types]

    def tokens(self) -> str:
        return "".join(e.text for e in self.of("token"))


TERMINAL = ("done", "error", "cancelled")
