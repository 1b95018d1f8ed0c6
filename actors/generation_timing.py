"""Where a turn's time to first token goes: one clock per turn, phases observed as they end.

Created where the request is first seen (the HTTP route, the WebSocket ``send``), carried
by the ``Send`` command to the actor, by the :class:`~actors.generation.Generation` to its
first token, and back to the transport by the ``SendResult``, so every layer times its own
phase against the same start. Each phase is reported once through ``observe`` (the
server's ``cero_turn_phase_seconds{phase}`` histogram); this module knows no metrics
library. The cost is a ``perf_counter()`` call and one histogram observation per phase,
a few microseconds per turn.

Phases (seconds; the serial ones add up to ``server_ttft``, give or take the overlap of
the commit with the model request):

- ``auth``: the request's arrival in the middlewares until the handler runs (the bearer or
  cookie session lookup);
- ``body``: reading and validating the body; ``admit``: catalog, limits, the
  ``clientMessageId`` lookup;
- ``lookup``: finding (or spawning) the conversation's actor; ``mailbox``: the ``send``
  waiting in the actor's mailbox;
- ``history``: loading the conversation's messages (0 when cached);
- ``context``: building the model request (history window, TOON, token budget);
- ``model_first_event``: the provider's stream until its first event; for Gemini, inside
  it, ``model_build`` (the SDK building the request until its HTTP request starts),
  ``model_upstream`` (the request sent until the response's head, the upstream's own
  delay included) and ``model_parse`` (the response's head until the first event: reading
  and parsing the first chunk);
- ``turn_commit``: the turn's rows committed, as the actor waits for it; inside it the
  writer's ``turn_queued`` and per statement ``db_*`` (see :mod:`server.storage.batch_writer`);
- ``commit_wait``: how long the opened model stream waited for the commit (0 when the
  commit was first);
- ``publish``: the commit's end until ``init`` is appended and the sender is answered;
- ``respond``: the sender answered until the response's head is written (HTTP);
- ``first_token``: the commit's end (or the model's first event, whichever is later)
  until the first token is appended to the log;
- ``first_write``: the first token appended until it is written to this response;
- ``server_ttft``: the request's arrival until its first token is written.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable

Observe = Callable[[str, float], None]

#: Every phase, in the order of a turn (tables list them so). The ``db_*`` ones are the
#: batch writer's statements inside ``turn_commit``; which of them a turn sees depends on
#: the engine (:mod:`server.storage.batch_writer`); every other one is seen by every turn.
PHASES = (
    "auth",
    "body",
    "admit",
    "lookup",
    "mailbox",
    "history",
    "context",
    "model_first_event",
    "model_build",
    "model_upstream",
    "model_parse",
    "turn_commit",
    "turn_queued",
    "db_thread_in",
    "db_acquire",
    "db_begin",
    "db_turn",
    "db_touch",
    "db_commit",
    "db_release",
    "db_thread_out",
    "db_batch",
    "commit_wait",
    "publish",
    "respond",
    "first_token",
    "first_write",
    "server_ttft",
)


class GenerationTiming:
    """The clock of one turn. ``mark`` keeps named instants; ``span`` observes a phase."""

    __slots__ = ("_observe", "marks", "on_first_token", "started")

    def __init__(self, observe: Observe, started: float | None = None) -> None:
        self._observe = observe
        self.started = time.perf_counter() if started is None else started
        self.marks: dict[str, float] = {}
        #: Called with the seconds from ``started`` when the first token is in the log, for
        #: a transport that writes it in the same loop pass (the WebSocket) and so needs
        #: no hook of its own.
        self.on_first_token: Callable[[float], None] | None = None

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.marks[name] = now
        return now

    def span(self, phase: str, since: float, until: float | None = None) -> float:
        """Observe ``phase`` as ``until - since`` (``until`` defaults to now); returns
        ``until``."""
        now = time.perf_counter() if until is None else until
        self._observe(phase, max(0.0, now - since))
        return now

    def since(self, phase: str, mark: str, until: float | None = None) -> float | None:
        """``span`` from a named mark, when that mark was taken."""
        start = self.marks.get(mark)
        if start is None:
            return None
        return self.span(phase, start, until)


#: The clock of the turn whose model request this task makes: set by the generation for
#: the model provider, whose HTTP client's trace hooks run in a task it starts.
CURRENT: contextvars.ContextVar[GenerationTiming | None] = contextvars.ContextVar(
    "cero_turn_timing", default=None
)

__all__ = ["CURRENT", "GenerationTiming", "Observe"]
