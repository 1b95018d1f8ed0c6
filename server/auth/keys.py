"""Typed app state owned by the sign-in package (``web.AppKey``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from server.auth.cookies import CookieCodec, CookieOp
    from server.auth.current import CurrentUser
    from server.auth.local import LocalSignIn
    from server.auth.sessions import Resolved
    from state.oauth_states import OAuthStates
    from state.wrong_codes import WrongCodes

COOKIES: web.AppKey[CookieCodec] = web.AppKey("auth_cookies")
LIMITER: web.AppKey[WrongCodes] = web.AppKey("auth_wrong_codes")
OAUTH_STATES: web.AppKey[OAuthStates] = web.AppKey("auth_oauth_states")
GITHUB_HTTP: web.AppKey[ClientSession] = web.AppKey("auth_github_http")
LOCAL: web.AppKey[LocalSignIn] = web.AppKey("auth_local")

# Per-request state: read it through server.auth.current (current_user, current_session).
USER: web.RequestKey[CurrentUser | None] = web.RequestKey("user")
RESOLVED: web.RequestKey[Resolved] = web.RequestKey("auth_resolved")
COOKIE_OPS: web.RequestKey[list[CookieOp]] = web.RequestKey("auth_cookie_ops")
