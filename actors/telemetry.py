"""What generations report to operators, without knowing a metrics library.

The actor package stays free of server code: the server hands an object with these
methods to :class:`~actors.conversation.ActorDeps` (``server.ops.metrics.Metrics`` is one) and
the generation calls it at the few points where a turn's fate is known, never per token.
"""

from __future__ import annotations

from typing import Protocol


class GenerationTelemetry(Protocol):
    def model_first_event_seen(self, provider: str, seconds: float) -> None:
        """The provider's stream was asked for and its first event arrived ``seconds``
        later (the upstream's time to first chunk, request building excluded)."""

    def model_stream_ended(self, provider: str, seconds: float) -> None:
        """An opened stream ended (finished, failed or stopped) ``seconds`` after it was
        asked for."""

    def generation_ended(self, outcome: str, code: str) -> None:
        """How a generation ended: ``complete``, ``cancelled``, ``error`` or
        ``interrupted`` (the stored status); ``code`` is the terminal error's code, else
        empty."""

    def finish_retried(self) -> None:
        """Committing a terminal state failed and is retried."""


__all__ = ["GenerationTelemetry"]
