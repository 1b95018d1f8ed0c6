"""The HTTP answers to a limit's refusal: :class:`state.errors.Refused` → ``429
rate_limited`` (with ``Retry-After``, and ``retryAfter`` in the body), and
:class:`state.errors.Unavailable` (cluster mode's Redis did not answer) → ``503
not_ready``. The limits in :mod:`state` and :mod:`cluster.state` raise the neutral
exceptions; the server's edges map them here (:func:`as_api_errors`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from server.core.errors import ApiError
from server.redis_conn import not_ready
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


@contextlib.contextmanager
def as_api_errors() -> Iterator[None]:
    """Raise a limit's refusal, or its store's fault, as the server's :class:`ApiError`."""
    try:
        yield
    except Refused as exc:
        raise rate_limited(exc.message, exc.retry_after) from None
    except Unavailable:
        raise not_ready() from None
