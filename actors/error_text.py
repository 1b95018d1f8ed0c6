"""The one sentence a client reads for an error code, fixed per code.

Clients learn what happened from the ``code``; the sentence beside it is for a person and
never carries what an exception said (an address, a library's words, a stack of causes):
that detail goes to the log, with the request id or the conversation id. Here are the
codes whose text used to come from an exception — a failed generation's ``error`` event
(and the answer stored with it) and the HTTP answers made from a failed dependency
(``not_ready``, ``internal``). Codes whose handlers write their own fixed sentence (a
validation error naming its field, a limit naming its number) keep it.

It lives in ``actors`` because both the actors (generation errors) and the server (HTTP
answers) use it, and the actors never import the server.
"""

from __future__ import annotations

from typing import Final

#: Code → the sentence clients get.
ERROR_TEXT: Final[dict[str, str]] = {
    # A generation's `error` event (docs/api.md "Events").
    "rate_limited": "The model is receiving too many requests; try again shortly.",
    "upstream_unavailable": "The model service could not be reached; try again shortly.",
    "upstream_timeout": "The model service took too long to answer; try again.",
    "bad_request": (
        "The model could not take this request (for example, the conversation is too long for it)."
    ),
    "blocked": "The model declined to answer (stopped by its safety filters).",
    "owner_lost": "The server generating this answer stopped.",
    "server_shutdown": "The server is shutting down.",
    "internal": "Internal server error.",
    # HTTP answers whose cause is a dependency.
    "not_ready": "The server is not ready; retry shortly.",
    "redis_unavailable": "Redis is unreachable; retry shortly.",
    "database_unavailable": "The database is unavailable; retry shortly.",
}

#: Readiness (``GET /readyz``, 503 ``not_ready``): which check failed, never why.
READY_TEXT: Final[dict[str, str]] = {
    "draining": "draining: the server is shutting down",
    "database": "database: not available",
    "redis": "redis: not available",
}


def error_text(code: str) -> str:
    """The fixed sentence for ``code`` (an unknown code reads as an internal error)."""
    return ERROR_TEXT.get(code, ERROR_TEXT["internal"])
