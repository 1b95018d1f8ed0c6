"""A local stand-in for GitHub's OAuth web flow and the REST endpoints sign-in needs.

It speaks GitHub's wire format closely enough for a server's "Sign in with GitHub" code
to run against it unchanged, with only the base URLs pointed here:

- ``GET  /login/oauth/authorize``     auto-approves as the chosen user (or denies) and
  302-redirects to ``redirect_uri?code=...&state=...``.
- ``POST /login/oauth/access_token``  form or JSON body (or query), client credentials in
  the body or HTTP Basic; answers JSON when ``Accept`` names ``application/json``, else
  ``application/x-www-form-urlencoded`` like GitHub. Errors are ``200`` with ``error``,
  ``error_description`` and ``error_uri``, as GitHub sends them.
- ``GET  /user`` and ``GET /user/emails`` with ``Authorization: Bearer|token <token>``;
  ``401 {"message": "Bad credentials", ...}`` for an unknown token.

Web and API share one root here: ``web_url == api_url``.

Why one module of ~470 lines: it is one fake service (its routes, its state and its
failure switches), read as a whole against GitHub's documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["FakeGitHub", "FakeUser", "RecordedRequest"]

_DOCS = "https://docs.github.com"
_TROUBLE = f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
_AUTHZ_TROUBLE = f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors"
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CODE_TTL_SECONDS = 600.0  # GitHub: "codes expire after 10 minutes"


@dataclass
class FakeUser:
    """A GitHub account. ``emails`` holds ``(email, primary, verified)`` tuples."""

    id: int
    login: str
    name: str | None = None
    avatar_url: str = ""
    emails: list[tuple[str, bool, bool]] = field(default_factory=list)
    # The profile's public e-mail as ``GET /user`` reports it. GitHub leaves it null
    # unless the user made one public, so a client must read ``/user/emails``.
    public_email: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str


@dataclass
class _Code:
    login: str
    client_id: str
    redirect_uri: str | None
    scope: str
    code_challenge: str | None
    expires_at: float


@dataclass
class _Token:
    login: str
    scope: str


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _normalize_scope(raw: str) -> str:
    """GitHub takes scopes space- (or comma-) separated and reports them comma-separated."""
    seen: list[str] = []
    for item in re.split(r"[\s,]+", raw.strip()):
        if item and item not in seen:
            seen.append(item)
    return ",".join(seen)


class FakeGitHub:
    """GitHub's OAuth + REST wire format on a local port.

    Settable behaviour (plain attributes, change them at any time):

    - ``users``: the accounts that exist.
    - ``login_as``: login of the account that is "signed in at GitHub" and approves
      ``/login/oauth/authorize``; ``None`` means ``users[0]``.
    - ``deny``: the user clicks "Cancel": authorize redirects with ``error=access_denied``.
    - ``registered_redirect_uri``: the OAuth app's callback URL; when set, a
      ``redirect_uri`` outside it is refused as GitHub does. ``None`` accepts any.
    - ``enforce_scopes``: ``/user/emails`` answers 404 unless the token has
      ``user:email`` or ``user`` (GitHub's behaviour).
    - ``require_user_agent``: API calls without ``User-Agent`` get GitHub's 403.
    """

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.users: list[FakeUser] = [
            FakeUser(
                id=1001,
                login="octocat",
                name="The Octocat",
                avatar_url="https://avatars.githubusercontent.com/u/1001?v=4",
                emails=[("octocat@example.com", True, True)],
            )
        ]
        self.login_as: str | None = None
        self.deny: bool = False
        self.registered_redirect_uri: str | None = None
        self.enforce_scopes: bool = True
        self.require_user_agent: bool = True
        self.requests: list[RecordedRequest] = []
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, _Token] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/login/oauth/authorize", self._authorize)
        app.router.add_post("/login/oauth/access_token", self._access_token)
        app.router.add_get("/user", self._user)
        app.router.add_get("/user/emails", self._user_emails)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("FakeGitHub already started")
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self._base_url = f"http://{shown}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeGitHub not started")
        return self._base_url

    @property
    def web_url(self) -> str:
        """Root of github.com's stand-in (``/login/oauth/...``)."""
        return self.base_url

    @property
    def api_url(self) -> str:
        """Root of api.github.com's stand-in (``/user``, ``/user/emails``)."""
        return self.base_url

    # -- helpers for tests ------------------------------------------------------------

    def user_by_login(self, login: str) -> FakeUser | None:
        return next((u for u in self.users if u.login == login), None)

    def issue_token(self, login: str, scope: str = "read:user,user:email") -> str:
        """Mint an access token directly, skipping the web flow."""
        token = "gho_" + secrets.token_urlsafe(27)[:36]
        self.tokens[token] = _Token(login=login, scope=_normalize_scope(scope))
        return token

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- middleware ----------------------------------------------------------------

    @web.middleware
    async def _record(
        self,
        request: web.Request,
        handler: Handler,
    ) -> web.StreamResponse:
        body = await request.text() if request.body_exists else ""
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
            )
        )
        response: web.StreamResponse = await handler(request)
        return response

    # -- OAuth web flow --------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        client_id = q.get("client_id", "")
        if client_id != self.client_id:
            # GitHub shows an HTML 404 page for an unknown application.
            return web.Response(status=404, text="Not Found")
        redirect_uri = q.get("redirect_uri") or self.registered_redirect_uri
        if not redirect_uri:
            return web.Response(status=400, text="redirect_uri is required")
        if self.registered_redirect_uri is not None and not _redirect_allowed(
            redirect_uri, self.registered_redirect_uri
        ):
            # GitHub redirects to the registered callback with redirect_uri_mismatch.
            location = _with_query(
                self.registered_redirect_uri,
                {
                    "error": "redirect_uri_mismatch",
                    "error_description": (
                        "The redirect_uri MUST match the registered callback URL for this"
                        " application."
                    ),
                    "error_uri": f"{_AUTHZ_TROUBLE}#redirect-uri-mismatch",
                    **({"state": q["state"]} if "state" in q else {}),
                },
            )
            raise web.HTTPFound(location)
        state = q.get("state")
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method")
        if challenge is not None and (
            method != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)
        ):
            return web.Response(
                status=400, text="invalid code_challenge / code_challenge_method (S256 only)"
            )
        extra = {"state": state} if state is not None else {}
        if self.deny:
            raise web.HTTPFound(
                _with_query(
                    redirect_uri,
                    {
                        "error": "access_denied",
                        "error_description": "The user has denied your application access.",
                        "error_uri": f"{_AUTHZ_TROUBLE}#access-denied",
                        **extra,
                    },
                )
            )
        user = (
            self.user_by_login(self.login_as)
            if self.login_as
            else (self.users[0] if self.users else None)
        )
        if user is None:
            return web.Response(status=500, text="FakeGitHub: no user to sign in as")
        code = secrets.token_hex(10)  # GitHub codes are 20 hex characters
        self.codes[code] = _Code(
            login=user.login,
            client_id=client_id,
            redirect_uri=q.get("redirect_uri"),
            scope=_normalize_scope(q.get("scope", "")),
            code_challenge=challenge,
            expires_at=time.monotonic() + _CODE_TTL_SECONDS,
        )
        raise web.HTTPFound(_with_query(redirect_uri, {"code": code, **extra}))

    async def _access_token(self, request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        ctype = request.content_type
        raw = await request.text() if request.body_exists else ""  # cached by aiohttp
        if ctype == "application/json":
            try:
                data = json.loads(raw or "{}")
            except ValueError:
                data = {}
            if isinstance(data, dict):
                params.update({str(k): str(v) for k, v in data.items() if v is not None})
        elif raw:
            params.update(parse_qsl(raw, keep_blank_values=True))

        client_id = params.get("client_id")
        client_secret = params.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
                basic_id, _, basic_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                basic_id, basic_secret = "", ""
            client_id = client_id or basic_id
            client_secret = client_secret or basic_secret

        if client_id != self.client_id or not hmac.compare_digest(
            (client_secret or "").encode(), self.client_secret.encode()
        ):
            return self._token_error(
                request,
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "incorrect-client-credentials",
            )
        grant_type = params.get("grant_type")
        if grant_type not in (None, "", "authorization_code"):
            return self._token_error(
                request,
                "unsupported_grant_type",
                f"The grant type {grant_type} is not supported.",
                "unsupported-grant-type",
            )
        code_value = params.get("code", "")
        # A code is single-use: any exchange attempt that names it spends it.
        code = self.codes.pop(code_value, None)
        if code is None or code.expires_at < time.monotonic() or code.client_id != client_id:
            return self._bad_code(request)
        redirect_uri = params.get("redirect_uri")
        if redirect_uri and code.redirect_uri and redirect_uri != code.redirect_uri:
            return self._token_error(
                request,
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch2",
            )
        if code.code_challenge is not None:
            verifier = params.get("code_verifier", "")
            if not _VERIFIER_RE.fullmatch(verifier) or not hmac.compare_digest(
                _s256(verifier), code.code_challenge
            ):
                return self._bad_code(request)
        token = "gho_" + secrets.token_urlsafe(27)[:36]
        self.tokens[token] = _Token(login=code.login, scope=code.scope)
        return self._token_reply(
            request, {"access_token": token, "token_type": "bearer", "scope": code.scope}
        )

    def _bad_code(self, request: web.Request) -> web.Response:
        return self._token_error(
            request,
            "bad_verification_code",
            "The code passed is incorrect or expired.",
            "bad-verification-code",
        )

    def _token_error(
        self, request: web.Request, error: str, description: str, anchor: str
    ) -> web.Response:
        return self._token_reply(
            request,
            {"error": error, "error_description": description, "error_uri": f"{_TROUBLE}#{anchor}"},
        )

    @staticmethod
    def _token_reply(request: web.Request, payload: dict[str, str]) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "application/json" in accept:
            return web.json_response(payload, content_type="application/json")
        return web.Response(
            text=urlencode(payload),
            content_type="application/x-www-form-urlencoded",
            charset="utf-8",
        )

    # -- REST API --------------------------------------------------------------------

    def _api_error(self, status: int, message: str) -> web.Response:
        return web.json_response(
            {"message": message, "documentation_url": f"{_DOCS}/rest", "status": str(status)},
            status=status,
        )

    def _authenticate(self, request: web.Request) -> tuple[FakeUser, _Token] | web.Response:
        if self.require_user_agent and not request.headers.get("User-Agent"):
            return web.Response(
                status=403,
                text=(
                    "Request forbidden by administrative rules. Please make sure your request"
                    " has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required)."
                ),
            )
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if not auth:
            return self._api_error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            return self._api_error(401, "Bad credentials")
        record = self.tokens.get(value.strip())
        user = self.user_by_login(record.login) if record else None
        if record is None or user is None:
            return self._api_error(401, "Bad credentials")
        return user, record

    async def _user(self, request: web.Request) -> web.Response:
        found = self._authenticate(request)
        if isinstance(found, web.Response):
            return found
        user, record = found
        response = web.json_response(
            {
                "login": user.login,
                "id": user.id,
                "node_id": base64.b64encode(f"04:User{user.id}".encode()).decode(),
                "avatar_url": user.avatar_url,
                "html_url": f"https://github.com/{user.login}",
                "type": "User",
                "site_admin": False,
                "name": user.name,
                "company": None,
                "blog": "",
                "location": None,
                "email": user.public_email,
                "bio": None,
                "created_at": "2011-01-25T18:44:36Z",
                "updated_at": "2024-01-01T00:00:00Z",
            }
        )
        response.headers["X-OAuth-Scopes"] = record.scope.replace(",", ", ")
        return response

    async def _user_emails(self, request: web.Request) -> web.Response:
        found = self._authenticate(request)
        if isinstance(found, web.Response):
            return found
        user, record = found
        scopes = set(record.scope.split(",")) if record.scope else set()
        if self.enforce_scopes and not scopes & {"user:email", "user"}:
            return self._api_error(404, "Not Found")
        return web.json_response(
            [
                {
                    "email": email,
                    "primary": primary,
                    "verified": verified,
                    "visibility": "private" if primary else None,
                }
                for email, primary, verified in user.emails
            ]
        )


def _redirect_allowed(redirect_uri: str, registered: str) -> bool:
    """GitHub: same scheme, host and port; the path may be a subdirectory of the registered one."""
    r, g = urlsplit(redirect_uri), urlsplit(registered)
    if (r.scheme, r.hostname, r.port) != (g.scheme, g.hostname, g.port):
        return False
    base = g.path.rstrip("/")
    return r.path == g.path or r.path == base or r.path.startswith(base + "/")
