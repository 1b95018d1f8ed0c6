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

Auth = str  # "public" | "bearer" (or the cookie) | "cookie" (only)
Operation = tuple[str, str]  # (method, path)
Described = tuple[str, str, Auth]  # (summary, tag, auth)


def _group(tag: str, auth: Auth, summaries: dict[Operation, str]) -> dict[Operation, Described]:
    """Operations of one tag that authenticate alike: ``(method, path)`` → summary."""
    return {op: (summary, tag, auth) for op, summary in summaries.items()}


_OPS: dict[Operation, Described] = {
    **_group(
        "health",
        "public",
        {
            ("get", "/"): 'Root probe: {"status": "ok"}',
            ("get", "/healthz"): "Liveness",
            ("get", "/readyz"): "Readiness: database (and Redis when configured)",
            ("get", "/metrics"): "Prometheus metrics",
            ("get", "/openapi.json"): "This document",
        },
    ),
    **_group("chat", "public", {("get", "/api/models"): "Model catalog"}),
    **_group(
        "chat",
        "bearer",
        {
            ("post", "/api/chat"): (
                "Send a message; streams SSE (Accept: text/event-stream) or NDJSON"
            ),
            ("get", "/api/conversations"): "List conversations (cursor pagination)",
            ("get", "/api/conversations/{id}/messages"): "A conversation's messages",
            ("patch", "/api/conversations/{id}"): "Rename a conversation",
            ("delete", "/api/conversations/{id}"): "Delete a conversation",
            ("post", "/api/conversations/{id}/cancel"): "Cancel a generation",
        },
    ),
    **_group(
        "live",
        "bearer",
        {
            ("get", "/api/conversations/{id}/events"): (
                "Live events (SSE); resume with Last-Event-ID or ?after="
            ),
            ("get", "/api/ws"): "WebSocket upgrade (see the README's WebSocket section)",
        },
    ),
    **_group(
        "auth",
        "public",
        {
            ("post", "/api/auth/device/code"): "RFC 8628 device authorization",
            ("post", "/api/auth/device/token"): "RFC 8628 token polling",
            ("get", "/api/auth/device"): "Look up (and claim) a user code",
            ("post", "/api/auth/sign-in/social"): "Start GitHub sign-in (Better Auth)",
            ("post", "/api/auth/sign-in/github"): "Start GitHub sign-in",
            ("get", "/api/auth/callback/github"): "GitHub OAuth callback",
            ("get", "/api/auth/get-session"): "Current session or null",
            ("get", "/api/auth/session"): "Current session or null",
            ("get", "/auth/local"): "One-time local sign-in link (loopback only)",
            ("get", "/auth/github"): "Browser entry to GitHub sign-in",
        },
    ),
    **_group(
        "auth",
        "bearer",
        {
            ("get", "/api/user/whoami"): "The signed-in user",
            ("post", "/api/auth/device/approve"): "Approve a device code",
            ("post", "/api/auth/device/deny"): "Deny a device code",
            ("post", "/api/auth/sign-out"): "Revoke the current session",
            ("get", "/api/auth/list-sessions"): "The user's live sessions",
            ("post", "/api/auth/revoke-session"): "Revoke one of the user's sessions",
        },
    ),
    **_group(
        "pages",
        "public",
        {
            ("get", "/device"): "Device approval page (HTML)",
            ("get", "/app"): "The web chat page (HTML)",
            ("get", "/app/{name}"): "The web page's script and stylesheet",
        },
    ),
    **_group(
        "pages",
        "cookie",
        {("post", "/device"): "Device approval form (HTML, cookie + same origin)"},
    ),
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
