"""Local sign-in for the embedded default (like Jupyter's token link).

When GitHub is not configured and the server binds loopback only (``Settings.local_mode``),
start-up announces a one-time link ``<public url>/auth/local?token=...``; opening it signs
in the local user (an ``Account`` with provider ``local``) and redirects to the web app
(``/app``) or a same-origin ``next`` path. On any other bind there is no link and
``/auth/local`` is 403.
The link is the one secret this server deliberately prints, on stderr only (it is how the
operator gets in); the structured log, which may be shipped elsewhere, never holds the token.
"""

from __future__ import annotations

import sys

import structlog
from aiohttp import web

from server.auth.cookies import COOKIES
from server.auth.redirects import safe_path
from server.auth.sessions import SESSIONS
from server.auth.sign_in_limit import admit_sign_in
from server.auth.users import Profile, link_or_create
from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.core.errors import ApiError
from server.core.ids import new_token, same, token_hash

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

LOCAL: web.AppKey[LocalSignIn] = web.AppKey("auth_local")

LOCAL_PROFILE = Profile(provider="local", account_id="local", name="Local user")


class LocalSignIn:
    """The one-time token (only its hash is kept)."""

    def __init__(self) -> None:
        self._hash: str | None = None

    def issue(self) -> str:
        token = new_token()
        self._hash = token_hash(token)
        return token

    def redeem(self, token: str) -> bool:
        if self._hash is None or not token or len(token) > 256:
            return False
        if not same(token_hash(token), self._hash):
            return False
        self._hash = None
        return True


def announce(app: web.Application) -> None:
    """Log and print the sign-in link in local mode; called once the server listens, so a
    start-up that fails (port taken) prints its one error line and no dead link."""
    settings = app[SETTINGS]
    if not settings.local_mode:
        return
    url = f"{settings.public_url}/auth/local?token={app[LOCAL].issue()}"
    log.info("local_sign_in", url=f"{settings.public_url}/auth/local", hint="see stderr")
    sys.stderr.write(f"Sign in: {url}\n")
    sys.stderr.flush()


@routes.get("/auth/local")
async def local_sign_in(request: web.Request) -> web.Response:
    await admit_sign_in(request)
    if not request.app[SETTINGS].local_mode:
        raise ApiError(403, "forbidden", "Local sign-in is only available on a loopback bind")
    if not request.app[LOCAL].redeem(request.query.get("token", "")):
        raise ApiError(403, "forbidden", "This sign-in link is invalid or was already used")
    user_id, _ = await link_or_create(LOCAL_PROFILE)
    token, resolved = await request.app[SESSIONS].start(
        user_id, ip_address=client_ip(request), user_agent=request.headers.get("User-Agent")
    )
    log.info("signed_in", provider="local", user_id=user_id, session_id=resolved.session.id)
    target = safe_path(request.query.get("next")) or "/app"
    response = web.Response(status=302, headers={"Location": target})
    request.app[COOKIES].set_session(response, token, resolved)
    return response
