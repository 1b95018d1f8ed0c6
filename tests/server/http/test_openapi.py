"""``/openapi.json`` is the truth: it and the app's router name the same operations (both
ways), and every operation states its answers — a response schema from the handler's
model, the contract's error shape per status, 401 where a credential is needed.
(tests/server/http/test_fuzz_http.py checks live answers against it.)"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from server.http.api_models import ApiErrorBody, OAuthErrorBody
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _document(live: Live) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(live.url + "/openapi.json") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    return doc


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    target: dict[str, Any] = doc["components"]["schemas"][ref.rpartition("/")[2]]
    return target


async def test_document_and_router_name_the_same_operations(live: Live) -> None:
    doc = await _document(live)
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in live.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routed - documented == set(), "routed but not documented"
    assert documented - routed == set(), "documented but not routed"


async def test_every_operation_states_its_answers(live: Live) -> None:
    doc = await _document(live)
    assert doc["openapi"].startswith("3.1")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            assert any(code in responses for code in ("101", "200", "201", "302")), where
            assert "405" in responses, where
            if {"bearer": []} in op.get("security", []) and {} not in op["security"]:
                assert "401" in responses, where
            for name in (p[1:-1] for p in path.split("/") if p.startswith("{")):
                params = {(p["name"], p["in"]) for p in op.get("parameters", [])}
                assert (name, "path") in params, where
            for code, answer in responses.items():
                if not code.startswith(("4", "5")):
                    continue
                content = answer["content"]
                if "text/html" in content:  # the device page answers its errors as a page
                    continue
                schema = _resolve(doc, content["application/json"]["schema"])
                expected = OAuthErrorBody if path.startswith("/api/auth/") else ApiErrorBody
                assert schema["title"] == expected.__name__, (where, code)
            ok = responses.get("200", {}).get("content", {}).get("application/json")
            if ok is not None and path != "/openapi.json":
                assert "$ref" in ok["schema"], where
            body = op.get("requestBody")
            if body is not None:
                assert body["content"], where


async def test_schemas_come_from_the_handlers_models(live: Live) -> None:
    from server.chat.request import ChatRequest
    from server.routes.conversations import Rename

    doc = await _document(live)
    schemas = doc["components"]["schemas"]
    chat = doc["paths"]["/api/chat"]["post"]["requestBody"]
    assert chat["required"] is True
    assert _resolve(doc, chat["content"]["application/json"]["schema"]) == schemas["ChatRequest"]
    assert set(schemas["ChatRequest"]["properties"]) == set(ChatRequest.model_fields)
    assert set(schemas["Rename"]["properties"]) == set(Rename.model_fields)
    page = doc["paths"]["/api/conversations"]["get"]["responses"]["200"]
    listed = _resolve(doc, page["content"]["application/json"]["schema"])
    assert set(listed["properties"]) == {"conversations", "nextCursor"}
    assert set(listed["required"]) == {"conversations", "nextCursor"}


async def test_document_is_built_once_and_served_as_the_same_bytes(live: Live) -> None:
    """Built once per process (it depends only on the code and the settings), not for
    every anonymous request: later requests get the same bytes, revalidated by ETag."""
    from server.routes.openapi import DOCUMENTS

    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/openapi.json") as resp:
            assert resp.status == 200
            first = await resp.read()
            etag = resp.headers["ETag"]
            assert "max-age" in resp.headers["Cache-Control"]
        builds = DOCUMENTS.builds
        for _ in range(5):
            async with http.get(live.url + "/openapi.json") as resp:
                assert resp.status == 200 and resp.headers["ETag"] == etag
                assert await resp.read() == first
        assert DOCUMENTS.builds == builds
        assert (
            DOCUMENTS.get(live.settings.public_url).body
            is DOCUMENTS.get(live.settings.public_url).body
        )
        async with http.get(live.url + "/openapi.json", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304 and await resp.read() == b""
