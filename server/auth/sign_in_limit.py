"""Sign-in requests per client IP: ``CERO_SIGN_IN_LIMIT`` in ``CERO_SIGN_IN_WINDOW`` seconds.

Every sign-in entry is anonymous and costs something: a state cookie and GitHub's authorize
round trip (``/api/auth/sign-in/social``, ``/api/auth/sign-in/github``, ``/auth/github``),
a code exchange with GitHub and a session row (``/api/auth/callback/github``), a token
check (``/auth/local``). They share one window per client IP (:func:`rate_key`: IPv6 per
/64), so an address cannot spread its attempts over the five paths. Past it: ``429
rate_limited`` with ``Retry-After`` (JSON, for the GET redirects too).

The window is a :class:`state.window.Window`, as the device-code limit's:
``MemoryWindow`` in one process, and in cluster mode
:class:`cluster.state.window.RedisWindow` (``limits``' moving window on Redis), so the budget
holds across every process; Redis down → ``503 not_ready`` (refused, never unlimited).
"""

from __future__ import annotations

import structlog
from aiohttp import web

from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.core.errors import ApiError
from server.limits.rate_limit import rate_key
from server.limits.refusals import as_api_errors
from server.ops.metrics import METRICS
from state.window import MemoryWindow, Window

log = structlog.get_logger(__name__)

SIGN_IN_LIMITER: web.AppKey[Window] = web.AppKey("sign_in_limiter")


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[SIGN_IN_LIMITER] = MemoryWindow(settings.sign_in_limit, settings.sign_in_window)


async def admit_sign_in(request: web.Request) -> None:
    """Count one sign-in request from the caller's address, or raise ``429``."""
    await admit_address(
        request,
        request.app[SIGN_IN_LIMITER],
        "sign_in",
        "Too many sign-in requests from this address; try again later",
    )


async def admit_address(request: web.Request, window: Window, limit: str, message: str) -> None:
    """Count one request from the caller's address in ``window``, or raise ``429
    rate_limited`` with ``Retry-After`` (counted as ``limit`` in
    ``cero_limit_refusals_total``). The device-code limit uses it too. The body is the
    contract's plain error (under ``/api/auth/`` ``{"error", "error_description"}``): the
    wait is in the header, as every HTTP client reads it."""
    with as_api_errors():
        wait = await window.hit(rate_key(client_ip(request)))
    if wait is None:
        return
    log.info("address_rate_limited", limit=limit, path=request.path)
    request.app[METRICS].limit_refusals_by(limit)
    raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(wait)})
