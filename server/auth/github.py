"""GitHub OAuth (web flow with PKCE S256): authorize URL, code exchange, profile.

Base URLs come from ``CERO_GITHUB_URL`` / ``CERO_GITHUB_API_URL`` so tests point them at a
stand-in. The ``state`` travels in GitHub's redirect and in a signed cookie (10 minutes);
:class:`state.oauth_states.OAuthStates` makes each state single-use (``app[OAUTH_STATES]``:
``MemoryOAuthStates`` in one process, ``RedisOAuthStates`` in cluster mode).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from server.auth.users import Profile
from server.core.config import Settings

SCOPE = "read:user user:email"
USER_AGENT = "cero-api"
TIMEOUT = aiohttp.ClientTimeout(total=15)

#: The client session for GitHub's API (opened by :func:`server.auth.setup` when GitHub
#: sign-in is on).
GITHUB_HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("auth_github_http")


class GitHubError(Exception):
    """GitHub refused or failed; ``str()`` is safe to log (no codes, no tokens)."""


def new_state() -> str:
    return secrets.token_urlsafe(32)


def new_verifier() -> str:
    """64 characters of ``[A-Za-z0-9_-]`` (RFC 7636 allows 43..128)."""
    return secrets.token_urlsafe(48)


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def redirect_uri(settings: Settings) -> str:
    return f"{settings.public_url}/api/auth/callback/github"


def authorize_url(settings: Settings, state: str, verifier: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.github_client_id or "",
            "redirect_uri": redirect_uri(settings),
            "scope": SCOPE,
            "state": state,
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{settings.github_url}/login/oauth/authorize?{query}"


async def exchange_code(
    http: aiohttp.ClientSession, settings: Settings, code: str, verifier: str
) -> str:
    """``POST /login/oauth/access_token`` (form, ``Accept: application/json``) → token."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri(settings),
        "client_id": settings.github_client_id or "",
        "client_secret": settings.github_client_secret or "",
    }
    try:
        async with http.post(
            f"{settings.github_url}/login/oauth/access_token",
            data=form,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                raise GitHubError(f"token endpoint answered {resp.status}")
            data: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise GitHubError(f"token endpoint failed: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise GitHubError("token endpoint answered a non-object")
    if data.get("error"):
        raise GitHubError(f"token endpoint error: {str(data['error'])[:64]}")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise GitHubError("token endpoint answered no access_token")
    return token


async def _api_get(
    http: aiohttp.ClientSession, settings: Settings, path: str, access_token: str
) -> tuple[int, Any]:
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Accept": "application/vnd.github+json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Api-Version": "2022-11-28",
    }
    try:
        async with http.get(f"{settings.github_api_url}{path}", headers=headers) as resp:
            if resp.status != 200:
                return resp.status, None
            return 200, await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise GitHubError(f"GET {path} failed: {type(exc).__name__}") from None


async def fetch_profile(
    http: aiohttp.ClientSession, settings: Settings, access_token: str
) -> Profile:
    """``/user`` and ``/user/emails``: the e-mail is the primary *verified* one, or none."""
    status, user = await _api_get(http, settings, "/user", access_token)
    if status != 200 or not isinstance(user, dict) or not isinstance(user.get("id"), int):
        raise GitHubError(f"GET /user answered {status}")
    email: str | None = None
    status, emails = await _api_get(http, settings, "/user/emails", access_token)
    if status == 200 and isinstance(emails, list):
        for item in emails:
            if (
                isinstance(item, dict)
                and item.get("primary") is True
                and item.get("verified") is True
                and isinstance(item.get("email"), str)
            ):
                email = item["email"][:320]
                break
    login = str(user.get("login") or "")
    name = user.get("name") if isinstance(user.get("name"), str) and user.get("name") else login
    avatar = user.get("avatar_url")
    return Profile(
        provider="github",
        account_id=str(user["id"]),
        name=str(name),
        email=email,
        email_verified=email is not None,
        image=avatar if isinstance(avatar, str) and avatar else None,
    )
