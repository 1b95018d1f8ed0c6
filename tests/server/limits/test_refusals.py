"""The server's answer to a refusal of :mod:`state`'s limits: the same ``429`` and ``503``
every limit gave before the limits moved out of the server (status, code, message,
``Retry-After`` and the body's ``retryAfter``)."""

from __future__ import annotations

import pytest

from actors.error_text import error_text
from server.core.errors import ApiError
from server.limits.refusals import as_api_errors
from state.errors import Refused, Unavailable


def test_a_refusal_is_429_rate_limited_with_its_wait() -> None:
    with pytest.raises(ApiError) as answer, as_api_errors():
        raise Refused("sends", "At most 3 messages per minute", 7)
    assert answer.value.status == 429
    assert answer.value.code == "rate_limited"
    assert answer.value.message == "At most 3 messages per minute"
    assert answer.value.headers == {"Retry-After": "7"}
    assert answer.value.extra == {"retryAfter": 7}


def test_a_store_that_does_not_answer_is_503_not_ready() -> None:
    with pytest.raises(ApiError) as answer, as_api_errors():
        raise Unavailable("generations")
    assert answer.value.status == 503
    assert answer.value.code == "not_ready"
    assert answer.value.message == error_text("redis_unavailable")
    assert answer.value.headers == {"Retry-After": "1"}


def test_anything_else_passes_through() -> None:
    with pytest.raises(KeyError), as_api_errors():
        raise KeyError("not a refusal")
