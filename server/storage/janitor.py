"""Terminal states that could not be committed in time, stored as soon as the database
takes them.

The actor retries a terminal write for ``CERO_DB_COMMIT_TIMEOUT``; past it the generation
ends with ``error`` for its watchers and the row would otherwise stay ``streaming`` with a
truncated answer until the next restart (issue 15, item 2: 3 of 150 rows on PostgreSQL
with backends killed every 0.25 s). The janitor keeps one retry loop per such answer,
with capped exponential backoff, and writes the outcome (``error`` and the whole text the
actor had) once the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from actors.api import Outcome

log = structlog.get_logger(__name__)

Finish = Callable[[str, Outcome], Awaitable[None]]


class Janitor:
    def __init__(self, finish: Finish, *, first_delay: float = 0.5, max_delay: float = 30.0):
        self._finish = finish
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stored = 0

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def adopt(self, message_id: str, outcome: Outcome) -> None:
        previous = self._tasks.pop(message_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(
            self._store(message_id, outcome), name=f"janitor:{message_id}"
        )
        self._tasks[message_id] = task
        task.add_done_callback(lambda t: self._forget(message_id, t))

    def _forget(self, message_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(message_id) is task:
            del self._tasks[message_id]

    async def _store(self, message_id: str, outcome: Outcome) -> None:
        delay = self.first_delay
        attempt = 0
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._finish(message_id, outcome)
            except Exception as exc:
                log.warning(
                    "janitor_retry", message_id=message_id, attempt=attempt, error=repr(exc)[:200]
                )
                delay = min(delay * 2, self.max_delay)
                continue
            self.stored += 1
            log.info("janitor_stored", message_id=message_id, status=outcome.status)
            return

    async def close(self) -> None:
        """At shutdown: one last try for each, then give up (start-up marks what is left
        ``interrupted``)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
