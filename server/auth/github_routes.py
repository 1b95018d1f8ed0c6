"""GitHub sign-in routes: ``/api/auth/sign-in/social``, ``/sign-in/github``, the callback,
and ``/auth/github?next=`` (a plain link for server-rendered pages)."""

from __future__ import annotations

import re

import structlog
from aiohttp import web
from pydantic import Field, StrictBool

from server.auth import github
from server.auth.cookies import COOKIES
from server.auth.github import GITHUB_HTTP
from server.auth.oauth_bodies import OAuthBody
from server.auth.redirects import safe_path, safe_target, with_query
from server.auth.sessions import SESSIONS
from server.auth.sign_in_limit import admit_sign_in
from server.auth.users import link_or_create
from server.core.app_keys import SETTINGS
from server.core.client_ip import client_ip
from server.core.errors import ApiError, json_response
from server.core.ids import same
from server.http import api_models as wire
from server.http.bodies import read_model
from server.limits.refusals import as_api_errors
from state.oauth_states import OAuthStates

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

#: Pending GitHub sign-ins (memory; Redis in cluster mode: :mod:`server.cluster_mode`).
OAUTH_STATES: web.AppKey[OAuthStates] = web.AppKey("auth_oauth_states")

_ERROR_WORD = re.compile(r"^[a-z_]{1,64}$")


class SocialRequest(OAuthBody):
    provider: str | None = Field(None, max_length=64)
    callbackURL: str | None = Field(None, max_length=2048)
    errorCallbackURL: str | None = Field(None, max_length=2048)
    newUserCallbackURL: str | None = Field(None, max_length=2048)
    disableRedirect: StrictBool | None = None


def _checked(request: web.Request, value: str | None) -> str | None:
    if value is None:
        return None
    target = safe_target(request, value)
    if target is None:
        raise ApiError(403, "invalid_callback_url", "Invalid callbackURL")
    return target


def _begin(
    request: web.Request, callback: str, error_url: str | None, new_user_url: str | None
) -> tuple[str, dict[str, str | None]]:
    """A fresh state and PKCE verifier; the authorize URL and the state cookie's data."""
    settings = request.app[SETTINGS]
    if not settings.github_enabled:
        raise ApiError(404, "provider_not_found", "GitHub sign-in is not configured")
    state = github.new_state()
    verifier = github.new_verifier()
    data: dict[str, str | None] = {
        "s": state,
        "v": verifier,
        "c": callback,
        "e": error_url,
        "n": new_user_url,
    }
    return github.authorize_url(settings, state, verifier), data


async def _sign_in(request: web.Request, body: SocialRequest) -> web.Response:
    callback = _checked(request, body.callbackURL) or "/"
    error_url = _checked(request, body.errorCallbackURL)
    new_user_url = _checked(request, body.newUserCallbackURL)
    url, data = _begin(request, callback, error_url, new_user_url)
    response = wire.reply(wire.SignInUrl, {"url": url, "redirect": not body.disableRedirect})
    response.headers["Location"] = url
    request.app[COOKIES].set_state(response, data)
    return response


@routes.post("/api/auth/sign-in/social")
async def sign_in_social(request: web.Request) -> web.Response:
    await admit_sign_in(request)
    body = await read_model(request, SocialRequest)
    if body.provider is None:
        raise ApiError(400, "invalid_request", "provider is required")
    if body.provider != "github":
        raise ApiError(404, "provider_not_found", "Provider not found")
    return await _sign_in(request, body)


@routes.post("/api/auth/sign-in/github")
async def sign_in_github(request: web.Request) -> web.Response:
    await admit_sign_in(request)
    body = await read_model(request, SocialRequest)
    return await _sign_in(request, body)


@routes.get("/auth/github")
async def sign_in_link(request: web.Request) -> web.Response:
    """``/auth/github?next=/device?...``: start GitHub sign-in with a plain link."""
    await admit_sign_in(request)
    callback = safe_path(request.query.get("next")) or "/device"
    url, data = _begin(request, callback, None, None)
    response = web.Response(status=302, headers={"Location": url})
    request.app[COOKIES].set_state(response, data)
    return response


def _redirect(request: web.Request, location: str) -> web.Response:
    response = web.Response(status=302, headers={"Location": location})
    request.app[COOKIES].clear_state(response)
    return response


@routes.get("/api/auth/callback/github")
async def callback(request: web.Request) -> web.Response:
    await admit_sign_in(request)
    settings = request.app[SETTINGS]
    codec = request.app[COOKIES]
    query = request.query
    raw = request.cookies.get(codec.state_name)
    data = codec.state_data(raw) if raw else None
    error_target = None
    if data is not None:
        error_target = safe_target(request, data.get("e") or data.get("c"))

    def fail(error: str, why: str) -> web.Response:
        log.warning("github_sign_in_failed", error=error, reason=why)
        if error_target is None:
            response = json_response({"error": error, "error_description": why}, status=400)
            codec.clear_state(response)
            return response
        return _redirect(request, with_query(error_target, error=error))

    if not settings.github_enabled:
        raise ApiError(404, "provider_not_found", "GitHub sign-in is not configured")
    if data is None:
        return fail("state_not_found", "No valid sign-in state cookie (expired or missing)")
    state = query.get("state", "")
    if not state or not same(state, data["s"] or ""):
        return fail("state_mismatch", "The state does not match this browser's sign-in")
    with as_api_errors():
        spent = await request.app[OAUTH_STATES].spend(state)
    if not spent:
        return fail("state_mismatch", "This sign-in state was already used")
    if query.get("error"):
        word = query["error"] if _ERROR_WORD.match(query["error"]) else "access_denied"
        return fail(word, "GitHub refused the sign-in")
    code = query.get("code")
    if not code or len(code) > 512:
        return fail("invalid_request", "No authorization code")
    http = request.app[GITHUB_HTTP]
    try:
        access_token = await github.exchange_code(http, settings, code, data["v"] or "")
        profile = await github.fetch_profile(http, settings, access_token)
    except github.GitHubError as exc:
        return fail("oauth_failed", str(exc))
    user_id, created = await link_or_create(profile)
    token, resolved = await request.app[SESSIONS].start(
        user_id, ip_address=client_ip(request), user_agent=request.headers.get("User-Agent")
    )
    log.info("signed_in", provider="github", user_id=user_id, session_id=resolved.session.id)
    target = None
    if created:
        target = safe_target(request, data.get("n"))
    target = target or safe_target(request, data.get("c")) or "/"
    response = _redirect(request, target)
    codec.set_session(response, token, resolved)
    return response
