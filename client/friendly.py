"""Error text a person at a terminal can act on.

Two jobs: the server's hints that name an HTTP endpoint (``see GET /api/models for the
list``) are rewritten to name the ``cero`` command that does it (``run `cero models` for
the list``); and network exceptions (aiohttp's ``TransferEncodingError: 400, message=…``,
``ServerDisconnectedError``, a refused connect) become a few plain words.
"""

from __future__ import annotations

import re

import aiohttp

#: An endpoint a server message may point at → the command that shows the same thing.
COMMANDS: dict[tuple[str, str], str] = {
    ("GET", "/api/models"): "cero models",
    ("GET", "/api/conversations"): "cero conversations",
    ("GET", "/api/user/whoami"): "cero whoami",
    ("GET", "/api/search"): "cero search",
    ("GET", "/api/export"): "cero export",
    ("POST", "/api/import"): "cero import",
    ("GET", "/api/account/events"): "cero watch --account",
    ("POST", "/api/auth/device/code"): "cero login",
}
_PER_CONVERSATION = {
    "messages": "cero messages ID",
    "events": "cero watch ID",
    "tree": "cero branches ID",
    "cancel": "cero cancel ID",
    "export": "cero export ID",
}
_HINT = re.compile(r"\bsee (GET|POST|PATCH|DELETE|PUT) (/api/[\w/{}.\-]*)")


def command_for(method: str, path: str) -> str | None:
    """The ``cero`` command for ``method path``, if there is one."""
    path = path.rstrip("/").split("?", 1)[0]
    if (found := COMMANDS.get((method, path))) is not None:
        return found
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "api", "conversations"]:
        return _PER_CONVERSATION.get(parts[4])
    return None


def cli_hints(text: str) -> str:
    """``… see GET /api/models for the list`` → ``… run `cero models` for the list``."""

    def swap(match: re.Match[str]) -> str:
        command = command_for(match.group(1), match.group(2))
        return f"run `{command}`" if command else match.group(0)

    return _HINT.sub(swap, text)


def network_reason(exc: BaseException) -> str:
    """What went wrong on the wire, in words (no exception class names, no status dumps)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        strerror = getattr(exc.os_error, "strerror", None)
        return f"connection failed ({strerror})" if strerror else "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):  # TransferEncodingError, ContentLengthError
        return "the server closed the connection mid-response"
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return "the server stopped answering (timed out)"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        strerror = getattr(exc, "strerror", None)
        return strerror if isinstance(strerror, str) else "a network error"
    if isinstance(exc, aiohttp.ClientError):
        return "a network error"
    return str(exc) or type(exc).__name__
