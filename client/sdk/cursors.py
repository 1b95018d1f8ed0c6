"""Where a follower is in each log it follows, and the waits between reconnects.

A cursor is ``"<epoch>:<seq>"`` (docs/api.md "Live events"). :class:`Cursors` keeps the
last one seen per log (a conversation id, or ``"account"``) and lets an event through only
when it is new: an event of the same epoch with a ``seq`` at or below the last one seen is
a duplicate (a replay overlapping what arrived before a reconnect) and is dropped. A
``reset`` moves the cursor to its ``(epoch, seq)``: live events follow from ``seq + 1``.

:class:`Backoff` is the wait before each reconnect: the server's ``retry:`` (or a default)
doubled per failure in a row, with jitter, up to a ceiling; a connection that delivered
something starts the count again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """``"<epoch>:<seq>"``, or ``None`` for anything else."""
        epoch, colon, seq = text.rpartition(":")
        if not colon or not epoch or not seq.isascii() or not seq.isdigit():
            return None
        return cls(epoch, int(seq))


def log_key(event: Mapping[str, Any]) -> str | None:
    """The log an event belongs to: its ``conversationId``, or ``"account"``."""
    if event.get("channel") == "account":
        return "account"
    conversation = event.get("conversationId")
    return conversation if isinstance(conversation, str) else None


class Cursors:
    """The last cursor seen per log; the gate against duplicates."""

    def __init__(self, start: Mapping[str, str | None] | None = None) -> None:
        self._last: dict[str, Cursor] = {}
        for key, text in (start or {}).items():
            cursor = Cursor.parse(text) if text else None
            if cursor is not None:
                self._last[key] = cursor

    def get(self, key: str) -> Cursor | None:
        return self._last.get(key)

    def text(self, key: str) -> str | None:
        """The cursor to resume ``key`` from (``after`` / ``Last-Event-ID``)."""
        cursor = self._last.get(key)
        return str(cursor) if cursor is not None else None

    def set(self, key: str, cursor: Cursor) -> None:
        self._last[key] = cursor

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def snapshot(self) -> dict[str, str]:
        return {key: str(cursor) for key, cursor in self._last.items()}

    def admit(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` is new for its log (and, if so, move the cursor to it).

        Events without ``epoch``/``seq`` (a ``clientMessageId`` retry's rebuilt events)
        always pass and move nothing. A ``reset`` always passes and moves the cursor."""
        key = log_key(event)
        epoch, seq = event.get("epoch"), event.get("seq")
        if key is None or not isinstance(epoch, str) or not isinstance(seq, int):
            return True
        last = self._last.get(key)
        fresh = event.get("type") == "reset" or last is None or last.epoch != epoch
        if not fresh and last is not None and seq <= last.seq:
            return False
        self._last[key] = Cursor(epoch, seq)
        return True


class Backoff:
    """Waits between reconnects: ``base`` (the server's ``retry:``, or the default) times
    2 per failure in a row, at most ``ceiling``, each with up to 25 % jitter."""

    def __init__(self, base: float = 1.0, ceiling: float = 30.0) -> None:
        self.base = base
        self.ceiling = ceiling
        self.failures = 0

    def next(self, at_least: float | None = None) -> float:
        """The wait before the next attempt (``at_least``: a ``Retry-After``)."""
        delay = min(self.ceiling, self.base * float(2**self.failures))
        self.failures += 1
        delay *= 1 + random.random() * 0.25
        if at_least is not None:
            delay = max(delay, at_least)
        return delay

    def succeeded(self) -> None:
        """A connection delivered something: the next failure waits ``base`` again."""
        self.failures = 0
