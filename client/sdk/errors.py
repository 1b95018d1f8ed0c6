"""What the library raises: one base class, :class:`CeroError`, and a subclass per way a
call can fail.

A refusal by the server (:class:`ApiError`) carries the contract's fields as they came
(docs/api.md "Errors"): ``code`` (rely on it, not on the text), ``error`` (the fixed human
sentence for that code), ``retry_after`` (seconds, from the body's ``retryAfter`` or the
``Retry-After`` header) and ``field`` for a validation error. Under ``/api/auth/`` the
OAuth shape ``{"error": code, "error_description": text}`` fills the same attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


class CeroError(Exception):
    """Every failure of this library."""


class ApiError(CeroError):
    """The server answered with an error status (or a WebSocket ``fault``)."""

    def __init__(
        self,
        status: int,
        code: str,
        error: str,
        *,
        retry_after: float | None = None,
        field: str | None = None,
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {error}")
        #: The HTTP status (0 for a WebSocket ``fault``).
        self.status = status
        #: The contract's error code (docs/api.md "Error code index").
        self.code = code
        #: The server's human text.
        self.error = error
        #: Seconds to wait before a retry may succeed, when the server said.
        self.retry_after = retry_after
        #: The request field a validation error names.
        self.field = field
        #: ``X-Request-ID`` of the answer: quote it when reporting a problem.
        self.request_id = request_id
        #: The whole error body.
        self.body: Mapping[str, Any] = body or {}


class Unauthorized(ApiError):
    """``401``: no valid credential (signed out, revoked or expired token)."""


class NotFound(ApiError):
    """``404``: missing, or another user's (the server does not tell them apart)."""


class RateLimited(ApiError):
    """``429``: a limit; :attr:`retry_after` says when to try again."""


class Unavailable(ApiError):
    """``503`` (``overloaded``, ``not_ready``, ``server_shutdown``, ``over_capacity``)."""


class ConnectionLost(CeroError):
    """The connection to the server failed or dropped before the answer was whole."""


class SessionEnded(CeroError):
    """The WebSocket closed with 4001 (or its handshake got 401): the session behind the
    token was revoked, signed out or expired. Sign in again; nothing reconnects."""


class ProtocolViolation(CeroError):
    """The server closed the WebSocket for something this side sent (1002, 1008, 1009):
    reconnecting would only repeat it."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: NotFound,
    429: RateLimited,
    503: Unavailable,
}


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None  # an HTTP date: not worth parsing for a hint
    return None


def api_error(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> ApiError:
    """The exception for an error answer: either JSON shape of the contract, or (from
    something that is not Cero, a proxy say) a code made of the status."""
    headers = headers or {}
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    code, text, field = f"http_{status}", f"the server answered HTTP {status}", None
    parsed: dict[str, Any] = data if isinstance(data, dict) else {}
    if isinstance(parsed.get("code"), str):
        code = parsed["code"]
        if isinstance(parsed.get("error"), str):
            text = parsed["error"]
    elif isinstance(parsed.get("error"), str):  # /api/auth/*: OAuth style
        code = parsed["error"]
        description = parsed.get("error_description")
        text = description if isinstance(description, str) else code
    if isinstance(parsed.get("field"), str):
        field = parsed["field"]
    retry_after = _seconds(parsed.get("retryAfter"))
    if retry_after is None:
        retry_after = _seconds(headers.get("Retry-After"))
    cls = _BY_STATUS.get(status, ApiError)
    return cls(
        status,
        code,
        text,
        retry_after=retry_after,
        field=field,
        request_id=headers.get("X-Request-ID"),
        body=parsed,
    )


def fault_error(frame: Mapping[str, Any]) -> ApiError:
    """The exception for a WebSocket ``fault`` frame (status 0)."""
    code = str(frame.get("code", "fault"))
    cls: type[ApiError] = RateLimited if code == "rate_limited" else ApiError
    if code == "not_found":
        cls = NotFound
    return cls(
        0,
        code,
        str(frame.get("error", code)),
        retry_after=_seconds(frame.get("retryAfter")),
        body=dict(frame),
    )


class UpgradeRefused(CeroError):
    """The WebSocket handshake was not answered with an upgrade: a proxy (or server) that
    refuses WebSockets answered ``status`` (``None``: it closed the connection or answered
    something that is not HTTP). Server-Sent Events may still get through
    (:mod:`client.sdk.fallback`)."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"WebSocket upgrade refused ({status or 'no answer'}): {detail}")
        self.status = status
