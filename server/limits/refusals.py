"""The HTTP answers to a limit's refusal: :class:`state.errors.Refused` → ``429
rate_limited`` (with ``Retry-After``, and ``retryAfter`` in the body), and
:class:`state.errors.Unavailable` (cluster mode's Redis did not answer) → ``503
not_ready``. The limits in :mod:`state` and :mod:`cluster.state` raise the neutral
exceptions; the server's edges map them here (:func:`as_api_errors`). A use-case that
needs cluster mode's Redis checks it first (:func:`require_redis`): while Redis is down it
answers ``503 not_ready`` instead of starting work that would fail halfway."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web

from actors.error_text import error_text
from server.core.app_keys import REDIS_HEALTH
from server.core.errors import ApiError
from state.errors import Refused, Unavailable


def rate_limited(message: str, retry_after: int) -> ApiError:
    """``429 {"error", "code": "rate_limited", "retryAfter"}`` with ``Retry-After`` (the
    body repeats the wait for WebSocket clients, whose ``fault`` has no headers)."""
    return ApiError(
        429,
        "rate_limited",
        message,
        headers={"Retry-After": str(retry_after)},
        extra={"retryAfter": retry_after},
    )


def not_ready() -> ApiError:
    """503 with a fixed sentence: why Redis failed is in the log (``redis_down``), not in
    the answer."""
    return ApiError(503, "not_ready", error_text("redis_unavailable"), headers={"Retry-After": "1"})


async def require_redis(app: web.Application) -> None:
    """``503 not_ready`` while cluster mode's Redis is down; nothing without cluster mode.
    Cheap while Redis is up (no round trip: the monitor and failed commands keep the flag
    current). While it is marked down, one shared ping confirms it before the request is
    refused, so a Redis that has just come back is used at once
    (:meth:`cluster.state.connection.RedisHealth.confirm_down`)."""
    health = app.get(REDIS_HEALTH)
    if health is not None and not health.up and await health.confirm_down():
        raise not_ready()


@contextlib.contextmanager
def as_api_errors() -> Iterator[None]:
    """Raise a limit's refusal, or its store's fault, as the server's :class:`ApiError`."""
    try:
        yield
    except Refused as exc:
        raise rate_limited(exc.message, exc.retry_after) from None
    except Unavailable:
        raise not_ready() from None
