"""What a limit or a shared store raises, in no protocol's terms: the server answers
:class:`Refused` with ``429 rate_limited`` and :class:`Unavailable` with ``503 not_ready``."""

from __future__ import annotations


class Refused(Exception):
    """A limit refused: ``limit`` names it (metrics), ``message`` is the sentence the client
    reads, ``retry_after`` the seconds to wait."""

    def __init__(self, limit: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after = retry_after


class Unavailable(Exception):
    """The shared store (cluster mode's Redis) did not answer ``op``: refused, never
    unlimited (the cause is reported to the store's health, not carried here)."""

    def __init__(self, op: str) -> None:
        super().__init__(op)
        self.op = op
