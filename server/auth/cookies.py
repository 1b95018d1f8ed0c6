"""Cookies in Better Auth's names and formats.

- ``better-auth.session_token``: ``token.<base64 HMAC-SHA256(secret, token)>``, URL-encoded,
  exactly as Better Auth signs it (so its clients and tools recognise it).
- ``better-auth.session_data``: a cache of {session, user}, signed with itsdangerous and
  valid 5 minutes, bound to the token's hash, so cookie requests skip the database.
- ``better-auth.state``: the GitHub sign-in state (state, PKCE verifier, callback URLs),
  signed with itsdangerous and valid 10 minutes.

Behind https every name gets the ``__Secure-`` prefix and the ``Secure`` attribute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer

from actors.clock import iso, parse_iso
from server.auth.sessions import SESSION_TTL, Resolved, SessionInfo, UserInfo
from state.oauth_states import STATE_TTL_S
from state.revocations import CACHE_TTL_S

_SIG_CHARS = 44  # standard base64 of 32 bytes, with one "=" of padding

CookieOp = Callable[[web.StreamResponse], None]

COOKIES: web.AppKey[CookieCodec] = web.AppKey("auth_cookies")
#: Per request: cookie changes applied when the response is prepared (:func:`apply_deferred`).
COOKIE_OPS: web.RequestKey[list[CookieOp]] = web.RequestKey("auth_cookie_ops")


def sign_value(secret: str, token: str) -> str:
    """``token.sig`` (not yet URL-encoded): Better Auth's signed cookie value."""
    mac = hmac.new(secret.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).digest()
    return f"{token}.{base64.b64encode(mac).decode('ascii')}"


def unsign_value(secret: str, value: str) -> str | None:
    """The token inside a signed value (URL-encoded or not), or ``None`` when forged."""
    value = unquote(value)
    token, dot, signature = value.rpartition(".")
    if not dot or not token or len(signature) != _SIG_CHARS or not signature.endswith("="):
        return None
    expected = sign_value(secret, token).rpartition(".")[2]
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        return None
    return token


class CookieCodec:
    """Names, attributes and (un)signing of the sign-in cookies for one app."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._secret = secret
        self.secure = secure
        prefix = "__Secure-" if secure else ""
        self.session_name = f"{prefix}better-auth.session_token"
        self.cache_name = f"{prefix}better-auth.session_data"
        self.state_name = f"{prefix}better-auth.state"
        self._cache = URLSafeTimedSerializer(secret, salt="cero.session-data")
        self._state = URLSafeTimedSerializer(secret, salt="cero.oauth-state")

    # -- session token -----------------------------------------------------------------

    def session_value(self, token: str) -> str:
        return quote(sign_value(self._secret, token), safe="-_.!~*'()")

    def token_from_cookie(self, value: str) -> str | None:
        return unsign_value(self._secret, value)

    # -- cache ---------------------------------------------------------------------------

    def cache_value(self, resolved: Resolved) -> str:
        s = resolved.session
        payload = {
            "s": {
                "id": s.id,
                "userId": s.user_id,
                "th": s.token_hash,
                "expiresAt": iso(s.expires_at),
                "createdAt": iso(s.created_at),
                "updatedAt": iso(s.updated_at),
            },
            "u": resolved.user.to_json(),
        }
        return self._cache.dumps(payload)

    def cached(self, value: str, token_hash: str) -> Resolved | None:
        """The cached {session, user} when the signature and age are good and it is this
        token's (a cache cookie never vouches for another session token)."""
        try:
            data: Any = self._cache.loads(value, max_age=CACHE_TTL_S)
            s, u = data["s"], data["u"]
            if not hmac.compare_digest(str(s["th"]), token_hash):
                return None
            return Resolved(
                session=SessionInfo(
                    id=str(s["id"]),
                    user_id=str(s["userId"]),
                    token_hash=str(s["th"]),
                    expires_at=parse_iso(s["expiresAt"]),
                    created_at=parse_iso(s["createdAt"]),
                    updated_at=parse_iso(s["updatedAt"]),
                ),
                user=UserInfo(
                    id=str(u["id"]),
                    name=str(u["name"]),
                    email=u["email"],
                    image=u["image"],
                    email_verified=bool(u["emailVerified"]),
                ),
            )
        except (BadSignature, KeyError, TypeError, ValueError):
            return None

    # -- OAuth state ---------------------------------------------------------------------

    def state_value(self, data: dict[str, str | None]) -> str:
        return self._state.dumps(data)

    def state_data(self, value: str) -> dict[str, str | None] | None:
        try:
            data: Any = self._state.loads(value, max_age=STATE_TTL_S)
        except (BadSignature, ValueError):  # ValueError: stray non-UTF-8 bytes
            return None
        if not isinstance(data, dict) or not isinstance(data.get("s"), str):
            return None
        return {str(k): (v if isinstance(v, str) else None) for k, v in data.items()}

    # -- writing -------------------------------------------------------------------------

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            secure=self.secure or None,
            samesite="Lax",
        )

    def _expire(self, response: web.StreamResponse, name: str) -> None:
        self._set(response, name, "", 0)

    def set_session_token(self, response: web.StreamResponse, token: str) -> None:
        """The session cookie alone, for the session's full lifetime (sign-in, or a slide)."""
        self._set(
            response, self.session_name, self.session_value(token), int(SESSION_TTL.total_seconds())
        )

    def set_session(self, response: web.StreamResponse, token: str, resolved: Resolved) -> None:
        """Session cookie + cache + ``set-auth-token``: what every sign-in answer carries."""
        self.set_session_token(response, token)
        self._set(response, self.cache_name, self.cache_value(resolved), CACHE_TTL_S)
        response.headers["set-auth-token"] = token
        response.headers["Access-Control-Expose-Headers"] = "set-auth-token"

    def set_cache(self, response: web.StreamResponse, resolved: Resolved) -> None:
        self._set(response, self.cache_name, self.cache_value(resolved), CACHE_TTL_S)

    def clear_session(self, response: web.StreamResponse) -> None:
        self._expire(response, self.session_name)
        self._expire(response, self.cache_name)

    def set_state(self, response: web.StreamResponse, data: dict[str, str | None]) -> None:
        self._set(response, self.state_name, self.state_value(data), STATE_TTL_S)

    def clear_state(self, response: web.StreamResponse) -> None:
        self._expire(response, self.state_name)


def defer(request: web.Request, op: CookieOp) -> None:
    """Apply ``op`` to whatever response this request ends with (see :func:`apply_deferred`).

    The middleware uses it: a handler may stream its answer, so cookies are added when the
    headers are about to go out, not after the handler returns. A cookie the handler set
    itself (a new sign-in) wins over a deferred one of the same name.
    """
    ops = request.get(COOKIE_OPS)
    if ops is None:
        ops = request[COOKIE_OPS] = []
    ops.append(op)


async def apply_deferred(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: deferred cookie ops, and no caching of auth answers.

    aiohttp renders ``response.cookies`` into headers before this signal, so the deferred
    cookies are written as ``Set-Cookie`` headers here.
    """
    ops = request.get(COOKIE_OPS)
    if ops:
        taken = {
            header.split("=", 1)[0].strip() for header in response.headers.getall("Set-Cookie", [])
        }
        scratch = web.StreamResponse()
        for op in ops:
            op(scratch)
        for name, morsel in scratch.cookies.items():
            if name not in taken:
                response.headers.add("Set-Cookie", morsel.OutputString())
    if request.path.startswith("/api/auth/") or request.path == "/device":
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Pragma", "no-cache")
