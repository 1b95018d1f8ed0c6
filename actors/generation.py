"""One generation of an answer: stream the model, publish tokens, store the outcome.

The actor (:mod:`actors.conversation`) decides *when* a generation starts and stops; this
module is what a generation does once started. It runs as a child task of the actor: it
opens the model stream (the request leaves while the turn commits), appends ``token`` and
``tool`` events to the hub, lets the process's flusher write the partial answer in
batches, and at the end maps how it ended to a stored outcome and a terminal event
(:func:`outcome_of`, pure), commits the outcome (retried for ``commit_timeout``) and only
then publishes the terminal event. What it reads of the actor's dependencies is declared
here (:class:`RunnerDeps`), so it imports nothing of :mod:`actors.conversation`.

Why one module of ~440 lines: one generation's life, from the opened stream to the
published terminal event; the pure mapping of its ending sits beside the code it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from actors.error_text import error_text
from actors.event_log import EventLog
from actors.flusher import Flusher
from actors.generation_timing import CURRENT, GenerationTiming
from actors.mailbox import ModelSpec
from actors.models.base import (
    ChatTurn,
    Final,
    ModelError,
    ModelEvent,
    ModelProvider,
    ModelRequest,
    TextDelta,
    ToolStep,
)
from actors.store import ConversationStore, Instructions, Outcome, StoredMessage
from actors.telemetry import GenerationTelemetry

#: Tokens published back to back before the generation yields to the event loop.
YIELD_EVERY = 32


class RequestBuilder(Protocol):
    """Builds the model request from the conversation's turns (:mod:`actors.context`)."""

    async def __call__(
        self,
        *,
        history: Sequence[ChatTurn],
        model: Any,
        tools: tuple[str, ...] = (),
        instructions: Instructions | None = None,
        provider: ModelProvider | None = None,
    ) -> ModelRequest: ...


class RunnerDeps(Protocol):
    """What a generation reads of the actor's dependencies
    (:class:`actors.conversation.ActorDeps` is one)."""

    @property
    def store(self) -> ConversationStore: ...

    @property
    def build_request(self) -> RequestBuilder: ...

    @property
    def flusher(self) -> Flusher: ...

    @property
    def on_token(self) -> Callable[[int], None] | None: ...

    @property
    def commit_timeout(self) -> float: ...

    @property
    def telemetry(self) -> GenerationTelemetry | None: ...


class StopReason(enum.Enum):
    """Why a generation was stopped before its model stream ended (``NONE``: it was not)."""

    NONE = "none"
    CANCELLED = "cancelled"  # an explicit cancel, or the conversation was deleted
    SHUTDOWN = "shutdown"  # the server stops: stored `interrupted`
    CRASHED = "crashed"  # the actor loop died under it


_GRAVITY = {
    StopReason.NONE: 0,
    StopReason.CANCELLED: 1,
    StopReason.SHUTDOWN: 2,
    StopReason.CRASHED: 3,
}


@dataclass(slots=True)
class Opened:
    """A model stream whose first event has arrived (``None``: it ended at once)."""

    stream: AsyncIterator[ModelEvent]
    first: ModelEvent | None
    #: The provider's name and when its stream was asked for (``perf_counter``): the
    #: model latency histograms in ``/metrics``.
    provider: str = ""
    requested: float = 0.0


@dataclass(slots=True)
class Generation:
    id: str
    user_message: StoredMessage
    assistant: StoredMessage
    model: str
    tools: tuple[str, ...]
    parts: list[str] = field(default_factory=list)
    tool_steps: list[dict[str, object]] = field(default_factory=list)
    dirty: bool = False
    stop: StopReason = StopReason.NONE
    concluding: bool = False  # the outcome is fixed: a cancel now is too late
    opening: asyncio.Task[Opened] | None = None
    consume: asyncio.Task[Final | None] | None = None
    task: asyncio.Task[None] | None = None
    #: The turn's clock until its first token (then dropped).
    timing: GenerationTiming | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def message_id(self) -> str:
        return self.assistant.id

    @property
    def stopped(self) -> bool:
        return self.stop is not StopReason.NONE

    def request_stop(self, reason: StopReason) -> None:
        """Stop the model stream; the generation then concludes with the gravest reason
        asked for (a crash outranks a shutdown, which outranks a cancel)."""
        if _GRAVITY[reason] > _GRAVITY[self.stop]:
            self.stop = reason
        if self.consume is not None:
            self.consume.cancel()


Terminal = tuple[str, dict[str, object]]


def outcome_of(
    generation: Generation, final: Final | None, error: ModelError | None
) -> tuple[Outcome, Terminal]:
    """What to store and what to publish for how the generation ended."""
    text = generation.text
    tools = generation.tool_steps or None
    common: dict[str, object] = {
        "messageId": generation.assistant.id,
        "generationId": generation.id,
    }
    match generation.stop:
        case StopReason.CRASHED:
            failed = {**common, "code": "internal", "error": error_text("internal")}
            return Outcome(status="error", content=text, tools=tools), ("error", failed)
        case StopReason.SHUTDOWN:
            gone = {**common, "code": "server_shutdown", "error": error_text("server_shutdown")}
            return Outcome(status="interrupted", content=text, tools=tools), ("error", gone)
        case StopReason.CANCELLED:
            return Outcome(status="cancelled", content=text, tools=tools), ("cancelled", common)
    if error is not None or final is None:
        # The fixed sentence for the code: the model's own words (an address, the SDK's
        # exception) went to the log where the error was caught (Runner.run).
        code = error.code if error is not None else "internal"
        failed = {**common, "code": code, "error": error_text(code)}
        return Outcome(status="error", content=text, tools=tools), ("error", failed)
    usage = final.usage.as_json()
    citations = [c.as_json() for c in final.citations]
    outcome = Outcome(
        status="complete",
        content=text,
        finish_reason=final.finish_reason,
        usage=usage,
        citations=citations,
        tools=tools,
    )
    done = {
        **common,
        "fullText": text,
        "finishReason": final.finish_reason,
        "usage": usage,
        "citations": citations,
    }
    return outcome, ("done", done)


def ending(event: Terminal, status: str) -> tuple[str, str]:
    """``(outcome, code)`` for ``cero_generations_total``: the stored status, except that
    an answer that could not be stored counts as the ``error`` its clients saw."""
    kind, data = event
    if kind != "error":
        return status, ""
    return ("interrupted" if status == "interrupted" else "error"), str(data.get("code", ""))


class Runner:
    """Runs generations for one actor: its hub, its dependencies, its log."""

    def __init__(self, hub: EventLog, deps: RunnerDeps, log: Any) -> None:
        self.hub = hub
        self.deps = deps
        self.log = log
        #: The generation whose ``init`` is out and whose outcome is not fixed yet: its
        #: opening task publishes the model's first event itself (see ``open``).
        self.live: Generation | None = None

    async def open(
        self,
        provider: ModelProvider,
        model: ModelSpec,
        tools: tuple[str, ...],
        turns: list[ChatTurn],
        timing: GenerationTiming | None = None,
    ) -> Opened:
        """Build the request, start the stream and wait for its first event.

        The instructions are read from the store here, for every generation (one indexed
        read, while the turn commits): a change made anywhere — another process in
        cluster mode included — is seen from the next send on, and nothing is cached."""
        building = time.perf_counter()
        instructions = await self.deps.store.instructions(self.hub.conversation_id)
        request = await self.deps.build_request(
            history=turns, model=model, tools=tools, instructions=instructions, provider=provider
        )
        # The bytes of the attachments still sent as parts (the fitted request's contents;
        # older ones are only named in the TOON block).
        wanted = [a.id for turn in request.contents for a in turn.attachments]
        if wanted:
            data = await self.deps.store.attachment_data(wanted)
            request = replace(request, attachment_data=data)
        requesting = time.perf_counter()
        if timing is not None:
            timing.marks["requesting"] = requesting
            CURRENT.set(timing)  # this task's own context: the provider's trace hooks
        stream = provider.stream(request)
        try:
            first = await anext(aiter(stream))
        except StopAsyncIteration:
            return Opened(stream, None, model.provider, requesting)
        except BaseException:
            await aclose(stream)
            raise
        telemetry = self.deps.telemetry
        if telemetry is not None:
            telemetry.model_first_event_seen(model.provider, time.perf_counter() - requesting)
        if timing is not None:
            timing.span("context", building, requesting)
            opened = timing.marks["opened"] = timing.span("model_first_event", requesting)
            timing.since("model_parse", "answered_head", opened)
        result = Opened(stream, first, model.provider, requesting)
        live = self.live
        if live is not None and live.opening is asyncio.current_task():
            # `init` is out: the first token goes to the log now, not after the loop
            # has run whatever is queued before the generation's task wakes up.
            self._publish_opened(live, result)
        return result

    async def run(self, generation: Generation, concluded: Callable[[Generation], None]) -> None:
        """Stream to the end (or the stop), store the outcome, then publish it.
        ``concluded`` runs after the store and before the terminal event is appended."""
        self.deps.flusher.track(generation)
        final: Final | None = None
        error: ModelError | None = None
        try:
            generation.consume = asyncio.get_running_loop().create_task(self._consume(generation))
            if generation.stopped:
                generation.consume.cancel()  # stopped before this task first ran
            try:
                final = await generation.consume
            except asyncio.CancelledError:
                if not generation.stopped:
                    raise
            except ModelError as exc:
                error = exc
                self.log.warning(
                    "generation_failed",
                    generation_id=generation.id,
                    code=exc.code,
                    detail=exc.message[:300],
                )
            except Exception:
                self.log.exception("generation_crashed", generation_id=generation.id)
                error = ModelError("internal", "The generation failed")
        finally:
            self.deps.flusher.untrack(generation)
        generation.concluding = True
        if self.live is generation:
            self.live = None
        outcome, event = outcome_of(generation, final, error)
        if not await self._store(generation, outcome):
            event = (
                "error",
                {
                    "messageId": generation.assistant.id,
                    "generationId": generation.id,
                    "code": "internal",
                    "error": error_text("internal"),
                },
            )
            # Stored as `error` with the text it has, as soon as the database takes it.
            self.deps.store.finish_later(generation.assistant.id, replace(outcome, status="error"))
        generation.assistant.content = outcome.content
        generation.assistant.status = outcome.status
        concluded(generation)
        self.hub.append(*event)
        if self.deps.telemetry is not None:
            self.deps.telemetry.generation_ended(*ending(event, outcome.status))
        self.log.info(
            "generation_finished",
            generation_id=generation.id,
            outcome=outcome.status,
            chars=len(outcome.content),
        )

    async def _store(self, generation: Generation, outcome: Outcome) -> bool:
        """Commit the terminal state, retrying with backoff for ``commit_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deps.commit_timeout
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.deps.store.finish(generation.assistant.id, outcome)
                return True
            except Exception as exc:
                fields = {"generation_id": generation.id, "attempt": attempt}
                if loop.time() + delay >= deadline:
                    self.log.error("finish_failed", **fields, error=repr(exc)[:300])
                    return False
                self.log.warning("finish_retry", **fields, error=repr(exc)[:300])
                if self.deps.telemetry is not None:
                    self.deps.telemetry.finish_retried()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _consume(self, generation: Generation) -> Final | None:
        assert generation.opening is not None
        try:
            opened = await generation.opening
        except asyncio.CancelledError:
            await discard(generation.opening)
            raise
        final: Final | None = None
        stream = opened.stream
        unyielded = 0
        try:
            first = opened.first
            if isinstance(first, Final):
                final = first
            elif first is not None:
                self._publish(generation, first)
            # The stream itself, not a generator chaining the first event before it: one
            # generator less for every token.
            async for item in stream:
                if isinstance(item, Final):
                    final = item
                elif self._publish(generation, item):
                    unyielded += 1
                    if unyielded >= YIELD_EVERY:
                        # A provider that has chunks buffered never suspends: let commands
                        # (cancel), lagging subscribers' pumps and other actors run.
                        unyielded = 0
                        await asyncio.sleep(0)
        finally:
            await aclose(stream)
            if self.deps.telemetry is not None and opened.requested:
                ended = time.perf_counter() - opened.requested
                self.deps.telemetry.model_stream_ended(opened.provider, ended)
        return final

    def publish_first(self, generation: Generation) -> None:
        """Right after ``init``: when the model's first event is already here, publish
        it now, not a few turns of the loop later from the generation's task (the
        transport writing its response head runs in between: ~0.2–0.3 ms of
        ``first_token`` on PostgreSQL in scenario 4)."""
        opening = generation.opening
        if opening is None or not opening.done() or opening.cancelled():
            return
        if opening.exception() is not None:
            return  # the generation's task reports it
        self._publish_opened(generation, opening.result())

    def _publish_opened(self, generation: Generation, opened: Opened) -> None:
        """Publish the stream's first event (a token or tool step) once: the generation's
        task then goes on from the second."""
        if generation.stopped or generation.concluding:
            return
        if isinstance(opened.first, TextDelta | ToolStep):
            self._publish(generation, opened.first)
            opened.first = None

    def _publish(self, generation: Generation, item: ModelEvent) -> bool:
        """Append a token or tool step to the log; ``True`` for a token."""
        if isinstance(item, TextDelta):
            if not item.text:
                return False
            generation.parts.append(item.text)
            generation.dirty = True
            self.hub.append("token", {"messageId": generation.assistant.id, "text": item.text})
            if generation.timing is not None:
                _first_token(generation.timing)
                generation.timing = None
            if self.deps.on_token is not None:
                self.deps.on_token(1)
            return True
        if isinstance(item, ToolStep):
            step: dict[str, object] = {"tool": item.tool, "payload": item.payload}
            generation.tool_steps.append(step)
            self.hub.append("tool", {"messageId": generation.assistant.id, **step})
        return False


def _first_token(timing: GenerationTiming) -> None:
    """Observe ``first_token``: from whichever came last of the commit and the model's
    first event, until the first token is in the log (marked for ``first_write``)."""
    appended = timing.mark("first_token")
    ready = max(timing.marks.get("committed", 0.0), timing.marks.get("opened", 0.0))
    if ready:
        timing.span("first_token", ready, appended)
    if timing.on_first_token is not None:
        timing.on_first_token(appended - timing.started)


async def aclose(stream: AsyncIterator[ModelEvent]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def discard(opening: asyncio.Task[Opened]) -> None:
    """Stop an opening stream that will not be consumed, and close it if it opened."""
    if not opening.done():
        opening.cancel()
        await asyncio.wait({opening})
    if not opening.cancelled() and opening.exception() is None:
        await aclose(opening.result().stream)
