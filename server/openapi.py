"""``GET /openapi.json``: an OpenAPI 3.1 description of every HTTP endpoint.

The operations are listed here by hand (summaries, auth, answers); request schemas come
from the same pydantic models that validate the bodies. A test checks that every route
the app registers is described, so the document cannot silently fall behind.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.chat_request import ChatRequest
from server.errors import json_response

JSON = "application/json"

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error", "code"],
}
_OAUTH_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    "required": ["error"],
}

# (method, path) → (summary, tag, auth: "bearer" | "public" | "cookie", extra operation fields)
_OPS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("get", "/"): ('Root probe: {"status": "ok"}', "health", "public"),
    ("get", "/healthz"): ("Liveness", "health", "public"),
    ("get", "/readyz"): ("Readiness: database (and Redis when configured)", "health", "public"),
    ("get", "/metrics"): ("Prometheus metrics", "health", "public"),
    ("get", "/openapi.json"): ("This document", "health", "public"),
    ("get", "/api/models"): ("Model catalog", "chat", "public"),
    ("post", "/api/chat"): (
        "Send a message; streams SSE (Accept: text/event-stream) or NDJSON",
        "chat",
        "bearer",
    ),
    ("get", "/api/conversations"): ("List conversations (cursor pagination)", "chat", "bearer"),
    ("get", "/api/conversations/{id}/messages"): ("A conversation's messages", "chat", "bearer"),
    ("patch", "/api/conversations/{id}"): ("Rename a conversation", "chat", "bearer"),
    ("delete", "/api/conversations/{id}"): ("Delete a conversation", "chat", "bearer"),
    ("post", "/api/conversations/{id}/cancel"): ("Cancel a generation", "chat", "bearer"),
    ("get", "/api/conversations/{id}/events"): (
        "Live events (SSE); resume with Last-Event-ID or ?after=",
        "live",
        "bearer",
    ),
    ("get", "/api/ws"): (
        "WebSocket upgrade (see the README's WebSocket section)",
        "live",
        "bearer",
    ),
    ("get", "/api/user/whoami"): ("The signed-in user", "auth", "bearer"),
    ("post", "/api/auth/device/code"): ("RFC 8628 device authorization", "auth", "public"),
    ("post", "/api/auth/device/token"): ("RFC 8628 token polling", "auth", "public"),
    ("get", "/api/auth/device"): ("Look up (and claim) a user code", "auth", "public"),
    ("post", "/api/auth/device/approve"): ("Approve a device code", "auth", "bearer"),
    ("post", "/api/auth/device/deny"): ("Deny a device code", "auth", "bearer"),
    ("post", "/api/auth/sign-in/social"): ("Start GitHub sign-in (Better Auth)", "auth", "public"),
    ("post", "/api/auth/sign-in/github"): ("Start GitHub sign-in", "auth", "public"),
    ("get", "/api/auth/callback/github"): ("GitHub OAuth callback", "auth", "public"),
    ("get", "/api/auth/get-session"): ("Current session or null", "auth", "public"),
    ("get", "/api/auth/session"): ("Current session or null", "auth", "public"),
    ("post", "/api/auth/sign-out"): ("Revoke the current session", "auth", "bearer"),
    ("get", "/api/auth/list-sessions"): ("The user's live sessions", "auth", "bearer"),
    ("post", "/api/auth/revoke-session"): ("Revoke one of the user's sessions", "auth", "bearer"),
    ("get", "/auth/local"): ("One-time local sign-in link (loopback only)", "auth", "public"),
    ("get", "/auth/github"): ("Browser entry to GitHub sign-in", "auth", "public"),
    ("get", "/device"): ("Device approval page (HTML)", "pages", "public"),
    ("post", "/device"): ("Device approval form (HTML, cookie + same origin)", "pages", "cookie"),
    ("get", "/app"): ("The web chat page (HTML)", "pages", "public"),
    ("get", "/app/{name}"): ("The web page's script and stylesheet", "pages", "public"),
}


def _operation(method: str, path: str) -> dict[str, Any]:
    summary, tag, auth = _OPS[(method, path)]
    error = _OAUTH_ERROR if path.startswith("/api/auth/") else _ERROR
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {
            "200": {"description": "OK"},
            "4XX": {"description": "Error", "content": {JSON: {"schema": error}}},
        },
    }
    if auth == "bearer":
        op["security"] = [{"bearer": []}, {"cookie": []}]
    elif auth == "cookie":
        op["security"] = [{"cookie": []}]
    for name in ("id", "name"):
        if "{" + name + "}" in path:
            op["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            ]
    if (method, path) == ("post", "/api/chat"):
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": ChatRequest.model_json_schema()}},
        }
        op["responses"]["200"] = {
            "description": "The turn's events",
            "content": {"text/event-stream": {}, "application/x-ndjson": {}},
        }
        op["responses"]["409"] = {"description": "conversation_busy"}
    return op


def document(public_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path in _OPS:
        paths.setdefault(path, {})[method] = _operation(method, path)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cero API",
            "version": "0.1.0",
            "description": "Realtime backend for AI chat. The wire contract is CONTRACT.md.",
        },
        "servers": [{"url": public_url}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "better-auth.session_token"},
            }
        },
        "paths": paths,
    }


def described() -> set[tuple[str, str]]:
    return set(_OPS)


async def openapi_view(request: web.Request) -> web.Response:
    from server.app_keys import SETTINGS

    return json_response(document(request.app[SETTINGS].public_url))
