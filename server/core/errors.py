"""The JSON error shapes of docs/api.md and the helpers that raise them.

Under ``/api/auth/`` errors are OAuth-style ``{"error": code, "error_description": text}``;
everywhere else ``{"error": text, "code": code}``. Handlers raise :class:`ApiError`; the
error middleware renders it (and every aiohttp or unexpected error) in the right shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

AUTH_PREFIX = "/api/auth/"


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine ``code`` and a human ``message``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BodyTimeout(Exception):
    """Raised by a request body's reads when the connection layer gave up on the body (too
    slow: ``CERO_BODY_TIMEOUT`` / ``CERO_MIN_BODY_RATE``, see :mod:`server.http.protocol`).

    The connection layer has answered ``408`` itself by then; this only makes the handler
    stop waiting. Not an :class:`ApiError`, so that a handler turning its own body errors
    into a page or another code does not catch it; the error middleware renders it as the
    same ``408`` (what the metrics and the access log count)."""


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "Unauthorized")


def not_found(what: str = "Not found") -> ApiError:
    return ApiError(404, "not_found", what)


def error_body(path: str, status: int, code: str, message: str) -> dict[str, object]:
    if path.startswith(AUTH_PREFIX):
        return {"error": code, "error_description": message}
    if status == 401 and code == "unauthorized":
        return {"error": "Unauthorized", "code": code}
    return {"error": message, "code": code}


def with_retry_after(
    body: dict[str, object], status: int, headers: Mapping[str, str] | None
) -> dict[str, object]:
    """docs/api.md: every ``429`` carries ``retryAfter`` (seconds) in its body beside the
    ``Retry-After`` header, whichever limit refused (per user, per address, wrong codes,
    sign-ins, connections): added here from the header where the refusal did not."""
    wait = (headers or {}).get("Retry-After", "")
    if status == 429 and "retryAfter" not in body and wait.isdigit():
        body["retryAfter"] = int(wait)
    return body


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    body = error_body(request.path, status, code, message)
    if extra:
        body.update(extra)
    with_retry_after(body, status, headers)
    response = web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """orjson-encoded JSON answer (aiohttp's default encoder is the slower stdlib one)."""
    return web.Response(
        status=status,
        body=orjson.dumps(data),
        content_type="application/json",
        headers=headers,
    )
