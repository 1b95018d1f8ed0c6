"""Request id, error rendering and body limit middlewares.

Every error leaves as JSON in the contract's shape: aiohttp's own 404/405/413, our
:class:`ApiError`, and anything unexpected (logged with its traceback, answered 500
without one).
"""

from __future__ import annotations

import re
import secrets

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from actors.error_text import error_text
from server.core.errors import ApiError, BodyTimeout, error_response
from server.http.bodies import body_limit, too_large
from server.storage import db

log = structlog.get_logger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


#: The request's id (``X-Request-ID``), for answers prepared inside the handler.
REQUEST_ID = web.RequestKey("cero_request_id", str)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(16)
    # bind/reset rather than ``bound_contextvars``: a long-lived request (a WebSocket)
    # keeps this frame for its whole life, and the context manager's objects with it.
    bound = structlog.contextvars.bind_contextvars(request_id=request_id)["request_id"]
    # Streams (SSE, NDJSON, the WebSocket upgrade) are prepared inside the handler: the
    # ``on_response_prepare`` hook (security_headers) gives them the id from here.
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-ID"] = request_id
        raise
    finally:
        structlog.contextvars.reset_contextvars(request_id=bound)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.content_length is not None:
            limit = body_limit(request)
            if request.content_length > limit:
                raise too_large(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(
            request, exc.status, exc.code, exc.message, headers=exc.headers, extra=exc.extra
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like pass through
        code = _HTTP_CODES.get(exc.status, "error")
        message = exc.reason
        if exc.status == 413:
            message = "Request body too large"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(request, exc.status, code, message, headers=headers)
    except BodyTimeout:
        # The connection layer gave up on the body and answered 408 already (see
        # server/http/protocol.py): the same answer here, for the metrics and the log.
        response = error_response(
            request, 408, "request_timeout", "Request body not received in time"
        )
        response.force_close()
        return response
    except ConnectionResetError:
        # The client vanished mid-request (half a body sent, then gone): not a server
        # error and no traceback; the answer below finds the connection closed.
        log.info("client_gone", path=request.path, method=request.method)
        return error_response(request, 400, "bad_request", "The request was cut short")
    except Exception as exc:
        # StoreUnavailable (a bounded write that expired), and the drivers' own lock and
        # connection errors from any other query (sign-in, conversation create/rename/
        # delete): the database cannot serve now, which is a 503 to retry, not a 500.
        if db.is_unavailable(exc):
            log.warning(
                "database_unavailable",
                path=request.path,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return error_response(
                request,
                503,
                "not_ready",
                error_text("database_unavailable"),
                headers={"Retry-After": "2"},
            )
        if isinstance(exc, RedisError):
            # Cluster mode: a Redis command that failed halfway through a request (a pool
            # with no free connection in time, a reset): retry, not a server error.
            log.warning(
                "redis_unavailable", path=request.path, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            return error_response(
                request,
                503,
                "not_ready",
                "Shared state is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(request, 500, "internal", error_text("internal"))
