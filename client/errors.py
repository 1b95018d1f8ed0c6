"""The one way the CLI fails: a :class:`CliError` carries the line to print and the exit code."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit codes of ``cero`` (documented in the README's CLI section)."""

    OK = 0
    FAILED = 1  # the server refused the request, or the answer ended in error / cancelled
    USAGE = 2  # bad arguments (argparse's own code)
    AUTH = 3  # not signed in, or the server rejected the stored token
    UNREACHABLE = 4  # no server answered at the URL
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure the user is told about in one line (``cero: error: <message>``)."""

    def __init__(
        self,
        message: str,
        code: Exit = Exit.FAILED,
        *,
        retryable: bool = False,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: A stream that was up may be resumed after this (the server is restarting).
        self.retryable = retryable
        #: The server's error ``code`` (``not_continuable``, …) when it refused the request.
        self.reason = reason
