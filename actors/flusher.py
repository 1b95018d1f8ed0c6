"""Writes the partial text of every streaming answer, for all actors, in batches.

One task per process, one transaction per interval: 200 answers streaming at once cost
one commit every ``interval`` instead of 200 (SQLite manages a few hundred commits a
second). The token path only sets a flag. A flush that lands after the answer's terminal
state is harmless: the store only updates rows that are still ``streaming``.

The store gets only what each answer gained since its last stored flush
(``append_partials``: the generation's ``parts`` from the last stored count on), never the
whole text again: a 1 MiB answer flushed every 0.5 s otherwise joined and wrote ~1 MiB per flush,
which for 40 such answers at once was ~200 MB of strings and database writes per round,
and memory the allocator never gave back (issue 15, item 13).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class Streaming(Protocol):
    """What the flusher reads of a generation."""

    dirty: bool

    @property
    def message_id(self) -> str: ...

    @property
    def parts(self) -> list[str]:
        """The answer's text so far, in pieces that are only ever appended to."""
        ...


class PartialWriter(Protocol):
    """What the flusher needs of the store
    (:meth:`actors.store.ConversationStore.append_partials`)."""

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None: ...


class Flusher:
    def __init__(self, store: PartialWriter, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.batches = 0
        self._live: dict[str, Streaming] = {}
        #: message id → (parts stored, characters stored), advanced on a confirmed write
        self._stored: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Metrics hook: each flush's duration in seconds and whether it committed.
        self.on_flush: Callable[[float, bool], None] | None = None

    def track(self, generation: Streaming) -> None:
        self._live[generation.message_id] = generation
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="flusher")

    def untrack(self, generation: Streaming) -> None:
        self._live.pop(generation.message_id, None)
        self._stored.pop(generation.message_id, None)

    async def _run(self) -> None:
        while self._live:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        dirty = [g for g in self._live.values() if g.dirty]
        if not dirty:
            return
        for generation in dirty:
            generation.dirty = False
        started = time.perf_counter()
        stored: list[tuple[str, int, int]] = []
        rows: list[tuple[str, int, str]] = []
        for generation in dirty:
            parts = generation.parts
            count, chars = self._stored.get(generation.message_id, (0, 0))
            end = len(parts)
            suffix = "".join(parts[count:end])
            rows.append((generation.message_id, chars, suffix))
            stored.append((generation.message_id, end, chars + len(suffix)))
        try:
            await self.store.append_partials(rows)
        except Exception:
            for generation in dirty:
                generation.dirty = True  # try again next interval (from the same point)
            log.warning("flush_failed", answers=len(dirty), exc_info=True)
            if self.on_flush is not None:
                self.on_flush(time.perf_counter() - started, False)
            return
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started, True)
        for message_id, end, chars in stored:
            if message_id in self._live:  # not untracked meanwhile
                self._stored[message_id] = (end, chars)
        self.batches += 1
        log.debug("flushed", answers=len(dirty), ms=round((time.perf_counter() - started) * 1e3, 2))

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
