"""``GET /openapi.json``: an OpenAPI 3.1 description of every HTTP endpoint.

Each operation names the pydantic models its handler really uses: the request body model
it validates with, the response model it answers through (:func:`server.http.api_models.reply`)
and the error statuses it can give, each with the contract's error shape
(``{error, code}``, or ``{error, error_description}`` under ``/api/auth/``). A test compares
the document with the app's router both ways, and schemathesis fuzzes a live server
against it.

Why one module of ~520 lines: it is the table of every operation (path, models, errors)
in one place, so that a reader and the router-comparing test check one list.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from server.auth.device_routes import CodeRequest, DecisionRequest, TokenRequest
from server.auth.github_routes import SocialRequest
from server.auth.session_routes import RevokeRequest
from server.chat.request import BranchRequest, ChatRequest, EditRequest
from server.core.errors import AUTH_PREFIX
from server.http import api_models as m
from server.routes.conversations import CancelBody, Rename
from server.routes.instructions import InstructionsBody
from server.routes.preferences import PreferencesBody
from server.routes.search import MAX_LIMIT as SEARCH_MAX_LIMIT
from server.routes.search import MAX_QUERY as SEARCH_MAX_QUERY
from server.routes.search import QUERY_PATTERN as SEARCH_PATTERN
from server.routes.search import SearchPage
from server.storage.export_schema import ExportFile

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"

#: "public" | "bearer" (or the cookie) | "cookie" (only) | "optional" | "metrics" (the
#: operator's CERO_METRICS_TOKEN, not a session)
Auth = str


@dataclass(frozen=True)
class Param:
    name: str
    where: str = "query"  # "query" | "header" | "path"
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    required: bool = False  # path parameters always are


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    auth: Auth = "public"
    #: The 200 answer: a response model, or a media type (``text/html``, SSE, ...).
    ok: type[BaseModel] | str | None = None
    body: type[BaseModel] | None = None
    form: bool = False  # the body may also be form-encoded (OAuth endpoints)
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    redirect: bool = False  # answers 302 with Location
    #: The body is ``multipart/form-data`` with one file in the part ``file`` (an upload),
    #: answered ``201``.
    upload: bool = False


#: A turn's answer: SSE with ``Accept: text/event-stream``, NDJSON otherwise.
TURN = "turn"
#: An export: the file (``ExportFile``) as JSON, or Markdown (``?format=markdown``).
EXPORT = "export"
_ID = Param("id", "path", description="A conversation id")
_MESSAGE_ID = Param("messageId", "path", description="A message of that conversation")
_EXPORT_FORMAT = Param(
    "format",
    schema={"type": "string", "enum": ["json", "markdown"]},
    description="json (default: every branch) or markdown (the active branch, for reading)",
)
_ATTACHMENT_ID = Param("id", "path", description="An attachment id (yours)")
#: What a download answers: the file's own type.
ANY = "*/*"
#: A limit per address or user: 429, and in cluster mode 503 not_ready while Redis, which
#: holds the limit for every process, does not answer (never unlimited).
_LIMITED = (429, 503)
#: 408: the body did not arrive within CERO_BODY_TIMEOUT / at CERO_MIN_BODY_RATE.
_BODY_ERRORS = (400, 408, 413, 415)
_DESCRIPTIONS = {
    400: "Bad request: malformed body or parameter (names `field` where it can)",
    401: "No valid credential",
    403: "Forbidden (foreign Origin on a cookie write, or refused)",
    404: "Not found (a missing and a foreign resource answer alike)",
    405: "Method not allowed",
    408: "Request body not received in time (request_timeout; the connection closes)",
    409: "Conflict (conversation_busy)",
    410: "Gone (expired)",
    413: "Body too large (an upload: payload_too_large, or quota_exceeded; `limit` names it)",
    415: "Unsupported media type",
    422: "An image that cannot be decoded safely (unprocessable_image)",
    429: "Rate limited (Retry-After)",
    503: "Not ready / overloaded (Retry-After)",
}

OPS: dict[tuple[str, str], Op] = {
    # health
    ("get", "/"): Op('Root probe: {"status": "ok"}', "health", ok=m.Status),
    ("get", "/healthz"): Op("Liveness", "health", ok=m.Status),
    ("get", "/readyz"): Op(
        "Readiness: database (and Redis when configured)", "health", ok=m.Status, errors=(503,)
    ),
    ("get", "/metrics"): Op(
        "Prometheus metrics: with CERO_METRICS_TOKEN as a bearer token (404 when none is "
        "set; the metrics listener CERO_METRICS_ADDRESS needs none)",
        "health",
        auth="metrics",
        ok="text/plain",
        errors=(401, 404),
    ),
    ("get", "/openapi.json"): Op("This document", "health", ok=JSON),
    # chat
    ("get", "/api/models"): Op(
        "Model catalog (shut-down ids only with all=true)",
        "chat",
        ok=m.Models,
        params=(
            Param(
                "all",
                schema={"type": "boolean"},
                description="true: list shut-down ids too (each names its successor)",
            ),
        ),
        errors=(400,),
    ),
    ("post", "/api/chat"): Op(
        "Send a message; streams SSE (Accept: text/event-stream) or NDJSON",
        "chat",
        "bearer",
        ok=TURN,
        body=ChatRequest,
        errors=(*_BODY_ERRORS, 404, 409, 429, 503),
    ),
    ("get", "/api/conversations"): Op(
        "List conversations (cursor pagination)",
        "chat",
        "bearer",
        ok=m.ConversationPage,
        params=(
            Param("limit", schema={"type": "integer", "minimum": 1, "maximum": 100}),
            Param(
                "cursor",
                schema={"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                description="nextCursor of the previous page (opaque; another is 400)",
            ),
        ),
        errors=(400,),
    ),
    ("get", "/api/conversations/{id}/messages"): Op(
        "A conversation's messages", "chat", "bearer", ok=m.Messages, params=(_ID,), errors=(404,)
    ),
    ("patch", "/api/conversations/{id}"): Op(
        "Rename a conversation and/or set its instructions (at least one of the two)",
        "chat",
        "bearer",
        ok=m.Renamed,
        body=Rename,
        params=(_ID,),
        errors=(*_BODY_ERRORS, 404),
    ),
    ("delete", "/api/conversations/{id}"): Op(
        "Delete a conversation", "chat", "bearer", ok=m.Deleted, params=(_ID,), errors=(404,)
    ),
    ("post", "/api/conversations/{id}/cancel"): Op(
        "Cancel a generation",
        "chat",
        "bearer",
        ok=m.Cancelled,
        body=CancelBody,
        params=(_ID,),
        errors=(*_BODY_ERRORS, 404),
    ),
    # branches (docs/api.md, Branches)
    ("post", "/api/conversations/{id}/messages/{messageId}/regenerate"): Op(
        "A new answer to a user message; streams like POST /api/chat",
        "chat",
        "bearer",
        ok=TURN,
        body=BranchRequest,
        params=(_ID, _MESSAGE_ID),
        errors=(*_BODY_ERRORS, 404, 409, 429, 503),
    ),
    ("post", "/api/conversations/{id}/messages/{messageId}/edit"): Op(
        "A user message's new version (a sibling) and its answer; streams like POST /api/chat",
        "chat",
        "bearer",
        ok=TURN,
        body=EditRequest,
        params=(_ID, _MESSAGE_ID),
        errors=(*_BODY_ERRORS, 404, 409, 429, 503),
    ),
    ("post", "/api/conversations/{id}/messages/{messageId}/continue"): Op(
        "Continue an answer that stopped early; streams like POST /api/chat",
        "chat",
        "bearer",
        ok=TURN,
        body=BranchRequest,
        params=(_ID, _MESSAGE_ID),
        errors=(*_BODY_ERRORS, 404, 409, 429, 503),
    ),
    ("post", "/api/conversations/{id}/messages/{messageId}/switch"): Op(
        "Switch the active branch to this message",
        "chat",
        "bearer",
        ok=m.Switched,
        params=(_ID, _MESSAGE_ID),
        errors=(404, 409, 503),
    ),
    ("get", "/api/conversations/{id}/tree"): Op(
        "Every message of every branch",
        "chat",
        "bearer",
        ok=m.Messages,
        params=(_ID,),
        errors=(404,),
    ),
    # export and import (docs/api.md, Export and import)
    ("get", "/api/conversations/{id}/export"): Op(
        "Export a conversation, every branch (JSON file, or Markdown: the active branch)",
        "chat",
        "bearer",
        ok=EXPORT,
        params=(_ID, _EXPORT_FORMAT),
        errors=(400, 404, 503),
    ),
    ("get", "/api/export"): Op(
        "Export every conversation of the account (JSON file, or Markdown)",
        "chat",
        "bearer",
        ok=EXPORT,
        params=(_EXPORT_FORMAT,),
        errors=(400, 503),
    ),
    ("post", "/api/import"): Op(
        "Import an export file (version 2, or 1): new conversations, new ids, attachments "
        "included, all or nothing (400 invalid_import names the first problem; 413 past "
        "CERO_MAX_IMPORT_BYTES, the counts, CERO_ATTACHMENT_MAX_BYTES or the user's quota)",
        "chat",
        "bearer",
        ok=m.ImportResult,
        body=ExportFile,
        errors=(*_BODY_ERRORS, 503),
    ),
    # attachments (docs/api.md, Attachments)
    ("post", "/api/attachments"): Op(
        "Upload one file (multipart/form-data, part 'file'); its type is decided by its "
        "content; limits CERO_ATTACHMENT_MAX_BYTES, CERO_ATTACHMENT_QUOTA_BYTES and "
        "CERO_ATTACHMENT_MAX_FILES",
        "attachments",
        "bearer",
        ok=m.Uploaded,
        upload=True,
        errors=(*_BODY_ERRORS, 503),
    ),
    ("get", "/api/attachments/{id}"): Op(
        "Download an attachment (yours only): its own type, nosniff, a sandboxing CSP, "
        "Content-Disposition attachment unless an image",
        "attachments",
        "bearer",
        ok=ANY,
        params=(_ATTACHMENT_ID,),
        errors=(404,),
    ),
    ("get", "/api/attachments/{id}/thumbnail"): Op(
        "An image attachment's thumbnail (PNG or JPEG, at most 256 px a side, no metadata)",
        "attachments",
        "bearer",
        ok="image/jpeg",
        params=(_ATTACHMENT_ID,),
        errors=(404, 415, 422),
    ),
    # instructions (docs/api.md, Instructions)
    ("get", "/api/user/instructions"): Op(
        "The user's instructions (null: none)", "chat", "bearer", ok=m.UserInstructions
    ),
    ("put", "/api/user/instructions"): Op(
        "Set the user's instructions (null or blank clears)",
        "chat",
        "bearer",
        ok=m.UserInstructions,
        body=InstructionsBody,
        errors=_BODY_ERRORS,
    ),
    ("get", "/api/user/preferences"): Op(
        "The user's remembered tools and model (none saved: no tools, aiModel null)",
        "chat",
        "bearer",
        ok=m.UserPreferences,
    ),
    ("put", "/api/user/preferences"): Op(
        "Set the user's remembered tools and model (the whole object)",
        "chat",
        "bearer",
        ok=m.UserPreferences,
        body=PreferencesBody,
        errors=_BODY_ERRORS,
    ),
    ("get", "/api/search"): Op(
        "Full-text search over your messages and conversation titles (ranked, paginated)",
        "chat",
        "bearer",
        ok=SearchPage,
        params=(
            Param(
                "q",
                schema={"type": "string", "pattern": SEARCH_PATTERN},
                description=f"Words to find (plain words, no query syntax): 1 to "
                f"{SEARCH_MAX_QUERY} characters once the spaces around are trimmed, no NUL",
                required=True,
            ),
            Param("limit", schema={"type": "integer", "minimum": 1, "maximum": SEARCH_MAX_LIMIT}),
            Param(
                "cursor",
                schema={"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                description="nextCursor of the previous page (opaque; another is 400)",
            ),
        ),
        errors=(400,),
    ),
    # live
    ("get", "/api/conversations/{id}/events"): Op(
        "Live events (SSE); resume with Last-Event-ID or ?after=",
        "live",
        "bearer",
        ok="text/event-stream",
        params=(
            _ID,
            Param("after", description="Resume after this event id"),
            Param("Last-Event-ID", "header", description="Resume after this event id"),
        ),
        errors=(400, 404, 429, 503),
    ),
    ("get", "/api/account/events"): Op(
        "The user's account channel (SSE): conversations created, renamed, deleted, answers"
        " started and ended, sessions revoked; resume with Last-Event-ID or ?after=",
        "live",
        "bearer",
        ok="text/event-stream",
        params=(
            Param("after", description="Resume after this event id"),
            Param("Last-Event-ID", "header", description="Resume after this event id"),
        ),
        errors=(401, 429, 503),
    ),
    ("get", "/api/ws"): Op(
        "WebSocket upgrade (frames: docs/api.md, WebSocket)",
        "live",
        "bearer",
        ok=None,
        errors=(400, 429, 503),
    ),
    # auth, public
    ("post", "/api/auth/device/code"): Op(
        "RFC 8628 device authorization",
        "auth",
        ok=m.DeviceCode,
        body=CodeRequest,
        form=True,
        errors=(*_BODY_ERRORS, *_LIMITED),
    ),
    ("post", "/api/auth/device/token"): Op(
        "RFC 8628 token polling (400 authorization_pending, slow_down, expired_token, ...)",
        "auth",
        ok=m.DeviceToken,
        body=TokenRequest,
        form=True,
        errors=_BODY_ERRORS,
    ),
    ("get", "/api/auth/device"): Op(
        "Look up (and claim) a user code",
        "auth",
        "optional",
        ok=m.DeviceLookup,
        params=(Param("user_code"),),
        errors=(400, *_LIMITED),  # unknown, used and expired codes are all 400 (RFC 8628 style)
    ),
    ("post", "/api/auth/sign-in/social"): Op(
        "Start GitHub sign-in (Better Auth)",
        "auth",
        ok=m.SignInUrl,
        body=SocialRequest,
        errors=(*_BODY_ERRORS, 403, 404, *_LIMITED),
    ),
    ("post", "/api/auth/sign-in/github"): Op(
        "Start GitHub sign-in",
        "auth",
        ok=m.SignInUrl,
        body=SocialRequest,
        errors=(*_BODY_ERRORS, 403, 404, *_LIMITED),
    ),
    ("get", "/api/auth/callback/github"): Op(
        "GitHub OAuth callback",
        "auth",
        params=(Param("code"), Param("state"), Param("error")),
        errors=(400, 404, *_LIMITED),
        redirect=True,
    ),
    ("get", "/api/auth/get-session"): Op(
        "Current session or null", "auth", "optional", ok=m.MaybeSession
    ),
    ("get", "/api/auth/session"): Op(
        "Current session or null", "auth", "optional", ok=m.MaybeSession
    ),
    ("get", "/auth/local"): Op(
        "Single-use local sign-in link (loopback only; refused: 403 with a reason)",
        "auth",
        params=(Param("token"), Param("next")),
        errors=(403, *_LIMITED),
        redirect=True,
    ),
    ("get", "/auth/github"): Op(
        "Browser entry to GitHub sign-in",
        "auth",
        params=(Param("next"),),
        errors=(404, *_LIMITED),
        redirect=True,
    ),
    # auth, signed in
    ("get", "/api/user/whoami"): Op("The signed-in user", "auth", "bearer", ok=m.WhoAmI),
    ("post", "/api/auth/device/approve"): Op(
        "Approve a device code",
        "auth",
        "bearer",
        ok=m.Success,
        body=DecisionRequest,
        form=True,
        errors=(*_BODY_ERRORS, 403, *_LIMITED),
    ),
    ("post", "/api/auth/device/deny"): Op(
        "Deny a device code",
        "auth",
        "bearer",
        ok=m.Success,
        body=DecisionRequest,
        form=True,
        errors=(*_BODY_ERRORS, 403, *_LIMITED),
    ),
    ("post", "/api/auth/sign-out"): Op(
        "Revoke the current session", "auth", "optional", ok=m.Success, errors=(403,)
    ),
    ("get", "/api/auth/list-sessions"): Op(
        "The user's live sessions", "auth", "bearer", ok=m.SessionList
    ),
    ("post", "/api/auth/revoke-session"): Op(
        "Revoke one of the user's sessions",
        "auth",
        "bearer",
        ok=m.RevokeStatus,
        body=RevokeRequest,
        errors=_BODY_ERRORS,
    ),
    ("post", "/api/auth/revoke-other-sessions"): Op(
        "Revoke every session of the user but the current one",
        "auth",
        "bearer",
        ok=m.RevokeStatus,
    ),
    # pages
    ("get", "/device"): Op(
        "Device approval page (HTML)",
        "pages",
        ok=HTML,
        params=(Param("user_code"),),
        errors=(403, 429),  # 403: a code another account claimed
    ),
    ("get", "/app"): Op("The web chat page (HTML)", "pages", ok=HTML),
    ("get", "/app/{name}"): Op(
        "The web page's script and stylesheet",
        "pages",
        ok="text/javascript",
        params=(Param("name", "path"),),
        errors=(404,),
    ),
    ("get", "/app/vendor/{name}"): Op(
        "The page's vendored libraries (markdown-it, highlight.js; only the files of"
        " server/web/app/vendor/manifest.json; ETag and 304)",
        "pages",
        ok="text/javascript",
        params=(Param("name", "path"),),
        errors=(404,),
    ),
    ("post", "/device"): Op(
        "Device approval form (HTML, cookie + same origin; signed out: a sign-in prompt)",
        "pages",
        "optional",
        ok=HTML,
        errors=(400, 403, 429),  # 403: a cross-site form, or another account's code
    ),
}

_HTML_ERRORS = {("post", "/device"), ("get", "/device")}


class _Schemas:
    """Collects every model's JSON schema under ``components/schemas`` (``$ref`` by name)."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], *, mode: str = "serialization") -> dict[str, Any]:
        schema = model.model_json_schema(
            mode="validation" if mode == "validation" else "serialization",
            ref_template="#/components/schemas/{model}",
        )
        self.defs.update(schema.pop("$defs", {}))
        name = model.__name__ if "title" not in schema else str(schema["title"])
        name = name.replace("[", "_").replace("]", "").replace(" ", "").replace(",", "_")
        name = name.replace("|", "_")
        self.defs[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def _operation(method: str, path: str, op: Op, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": _op_id(method, path),
    }
    if op.auth == "bearer":
        out["security"] = [{"bearer": []}, {"cookie": []}]
    elif op.auth == "cookie":
        out["security"] = [{"cookie": []}]
    elif op.auth == "optional":
        out["security"] = [{"bearer": []}, {"cookie": []}, {}]
    elif op.auth == "metrics":
        out["security"] = [{"metricsToken": []}]
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path" or p.required,
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
            }
            for p in op.params
        ]
    if op.body is not None:
        body_schema = schemas.ref(op.body, mode="validation")
        media = {JSON: {"schema": body_schema}}
        if op.form:
            media[FORM] = {"schema": body_schema}
        required = any(f.is_required() for f in op.body.model_fields.values())
        out["requestBody"] = {"required": required, "content": media}
    elif op.upload:
        out["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    },
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                }
            },
        }
    elif (method, path) == ("post", "/device"):
        out["requestBody"] = {
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "user_code": {"type": "string"},
                            "action": {
                                "type": "string",
                                "description": "approve or deny (else the form again)",
                            },
                        },
                    }
                }
            }
        }
    responses: dict[str, Any] = {}
    if op.redirect:
        responses["302"] = {"description": "Redirect (Location)"}
    elif isinstance(op.ok, type):
        responses["201" if op.upload else "200"] = {
            "description": "Created" if op.upload else "OK",
            "content": {JSON: {"schema": schemas.ref(op.ok)}},
        }
    elif op.ok == TURN:
        responses["200"] = {
            "description": "The turn's events",
            "content": {"text/event-stream": {}, "application/x-ndjson": {}},
        }
    elif op.ok == EXPORT:
        responses["200"] = {
            "description": "The export, streamed (Content-Disposition: attachment)",
            "content": {JSON: {"schema": schemas.ref(ExportFile)}, "text/markdown": {}},
        }
    elif op.ok is not None:
        responses["200"] = {"description": "OK", "content": {op.ok: {}}}
    else:
        responses["101"] = {"description": "Switching Protocols (WebSocket)"}
    error = m.OAuthErrorBody if path.startswith(AUTH_PREFIX) else m.ApiErrorBody
    statuses = set(op.errors) | {405}
    if op.auth == "bearer":
        statuses.add(401)
    if op.auth in ("bearer", "cookie") and method != "get":
        statuses.add(403)  # a cookie write from a foreign Origin
    for status in sorted(statuses):
        if (method, path) in _HTML_ERRORS:
            content: dict[str, Any] = {HTML: {}}
        else:
            content = {JSON: {"schema": schemas.ref(error)}}
        responses[str(status)] = {
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": content,
        }
    out["responses"] = responses
    return out


def _op_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.split("/") if w] or ["root"]
    return method + "_" + "_".join(w.replace("-", "_").replace(".", "_") for w in words)


def document(public_url: str) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPS.items():
        paths.setdefault(path, {})[method] = _operation(method, path, op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cero API",
            "version": "0.1.0",
            "description": "Realtime backend for AI chat. API reference: docs/api.md (repository).",
        },
        "servers": [{"url": public_url}],
        "components": {
            "schemas": dict(sorted(schemas.defs.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "better-auth.session_token"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator's CERO_METRICS_TOKEN",
                },
            },
        },
        "paths": paths,
    }


def described() -> set[tuple[str, str]]:
    return set(OPS)


@dataclass(frozen=True)
class Rendered:
    """The document as served: its bytes and their ``ETag``."""

    body: bytes
    etag: str


class _Documents:
    """The rendered document per public URL, built once per process: it depends only on
    the code and the settings, and building it costs ~100 ms of CPU, which an anonymous
    client could otherwise spend again with every request."""

    def __init__(self) -> None:
        self._by_url: dict[str, Rendered] = {}
        #: How many documents this process built (tests read it).
        self.builds = 0

    def get(self, public_url: str) -> Rendered:
        found = self._by_url.get(public_url)
        if found is None:
            body = orjson.dumps(document(public_url))
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found = self._by_url[public_url] = Rendered(body, etag)
            self.builds += 1
        return found


DOCUMENTS = _Documents()
#: Clients may reuse it for five minutes, then revalidate with ``If-None-Match`` (304).
CACHE_CONTROL = "public, max-age=300"


async def openapi_view(request: web.Request) -> web.Response:
    from server.core.app_keys import SETTINGS

    doc = DOCUMENTS.get(request.app[SETTINGS].public_url)
    headers = {"ETag": doc.etag, "Cache-Control": CACHE_CONTROL}
    if doc.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc.body, content_type="application/json", headers=headers)
