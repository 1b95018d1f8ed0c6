"""Writes the partial text of every streaming answer, for all actors, in batches.

One task per process, one transaction per interval: 200 answers streaming at once cost
one commit every ``interval`` instead of 200 (SQLite manages a few hundred commits a
second). The token path only sets a flag. A flush that lands after the answer's terminal
state is harmless: the store only updates rows that are still ``streaming``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class Streaming(Protocol):
    """What the flusher reads of a generation."""

    dirty: bool

    @property
    def message_id(self) -> str: ...

    @property
    def text(self) -> str: ...


class PartialWriter(Protocol):
    async def flush_partials(self, batch: Sequence[tuple[str, str]]) -> None: ...


class Flusher:
    def __init__(self, store: PartialWriter, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.batches = 0
        self._live: dict[str, Streaming] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, generation: Streaming) -> None:
        self._live[generation.message_id] = generation
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="flusher")

    def untrack(self, generation: Streaming) -> None:
        self._live.pop(generation.message_id, None)

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
        batch = [(g.message_id, g.text) for g in dirty]
        started = time.perf_counter()
        try:
            await self.store.flush_partials(batch)
        except Exception:
            for generation in dirty:
                generation.dirty = True  # try again next interval
            log.warning("flush_failed", answers=len(batch), exc_info=True)
            return
        self.batches += 1
        log.debug("flushed", answers=len(batch), ms=round((time.perf_counter() - started) * 1e3, 2))

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
