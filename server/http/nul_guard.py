"""U+0000 in a request's text is refused before any handler sees it (issue 20 item 5).

PostgreSQL ``text`` cannot hold NUL: a query carrying one fails inside the database with
``CharacterNotInRepertoireError``, which answered ``500 internal`` (``GET
/api/conversations/%00/messages``; SQLite, which stores NUL, answered 404). Checking each
handler would miss the next route; so the rule is enforced in two places every request
goes through, the same on both engines:

- here, for the URL: a path parameter holding NUL is ``404 not_found`` (no resource has
  such a name); no query parameter reaches a database as text (cursors, user codes and
  redirect targets are parsed or normalised first; tests/server/http/test_control_chars.py sends NUL
  in every one), so queries are left to their own parsing;
- in :mod:`server.http.bodies`, for JSON and form bodies: ``400`` naming the field, for the
  fields the route's model reads.

A body field the route does not read is ignored, NUL or not, like any other unknown one:
it reaches no database.

Other control characters are stored faithfully by both engines and are left to each
field's own validation (an id holding one is simply not found).
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web
from aiohttp.typedefs import Handler

from server.core.errors import ApiError, not_found

NUL = "\x00"
MESSAGE = "must not contain NUL characters"


def refused(field: str) -> ApiError:
    """The ``400`` for a NUL in ``field`` (a dotted body path)."""
    return ApiError(400, "invalid_request", f"{field}: {MESSAGE}", extra={"field": field})


@web.middleware
def nul_guard_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Inside the auth middleware: a request without credentials still gets its ``401``
    first, so a probe learns nothing more than before.

    Not a coroutine: it checks, then hands back the handler's own awaitable (a tail call),
    so a long-lived request (a WebSocket) does not keep a frame of it alive."""
    if any(NUL in value for value in request.match_info.values()):
        raise not_found()
    return handler(request)


def first_nul(data: object, root: str = "body") -> str | None:
    """The dotted path of the first string (value or key) in ``data`` holding NUL, or
    ``None``. Iterative: a JSON body may nest deeper than Python's recursion limit."""
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return path or root
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    return path or root
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None
