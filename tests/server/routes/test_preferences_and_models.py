"""Issue 25, "Model picker": ``GET /api/models`` leaves shut-down ids out unless
``?all=true``, and ``GET``/``PUT /api/user/preferences`` remembers a user's tools and model
(docs/api.md, Models and Preferences), on both engines with Gemini configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from actors.models.catalog import Catalog
from standins.gemini import FakeGemini
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini

pytestmark = pytest.mark.asyncio(loop_scope="module")
PATH = "/api/user/preferences"


@dataclass
class Env:
    live: Live
    fake: FakeGemini
    http: aiohttp.ClientSession
    token: str

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = bearer(token or self.token)
        async with self.http.request(method, self.live.url + path, headers=headers, **kw) as r:
            return r.status, await r.json()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with live_with_gemini(database_url) as (live, fake):
        token, _ = await make_user_session("Ada")
        async with aiohttp.ClientSession() as http:
            yield Env(live, fake, http, token)


async def test_models_hide_shut_down_ids_unless_all(env: Env) -> None:
    catalog = Catalog.load(gemini_enabled=True)
    shut = {m["id"] for m in catalog.public_list() if m["status"] == "shut_down"}
    assert len(shut) >= 5
    status, listed = await env.call("GET", "/api/models")
    assert status == 200
    ids = [m["id"] for m in listed["models"]]
    assert not shut & set(ids)
    assert "demo" in ids and listed["default"] in ids
    assert all(m["status"] != "shut_down" for m in listed["models"])
    for value in ("true", "1", "TRUE"):
        status, everything = await env.call("GET", f"/api/models?all={value}")
        assert status == 200
        full = {m["id"]: m for m in everything["models"]}
        assert shut <= set(full)
        # Each shut-down id names the model that answers it; that one is listed by default.
        for model_id in shut:
            assert full[model_id]["successor"] in full
    status, same = await env.call("GET", "/api/models?all=false")
    assert [m["id"] for m in same["models"]] == ids
    status, refused = await env.call("GET", "/api/models?all=maybe")
    assert status == 400 and refused["code"] == "invalid_request" and refused["field"] == "all"


async def test_preferences_round_trip(env: Env) -> None:
    token, _ = await make_user_session("Prefs")
    assert await env.call("GET", PATH, token) == (200, {"tools": [], "aiModel": None})
    body = {
        "tools": ["code_execution", "google_search", "code_execution"],
        "aiModel": "models/gemini-3.5-flash",
    }
    saved = {"tools": ["code_execution", "google_search"], "aiModel": "gemini-3.5-flash"}
    assert await env.call("PUT", PATH, token, json=body) == (200, saved)
    assert await env.call("GET", PATH, token) == (200, saved)
    # Another user has their own.
    assert (await env.call("GET", PATH))[1] == {"tools": [], "aiModel": None}
    # PUT replaces the whole: aiModel left out is reset, tools may be emptied.
    assert await env.call("PUT", PATH, token, json={"tools": []}) == (
        200,
        {"tools": [], "aiModel": None},
    )
    # A shut-down id is a catalog id: kept as given (the picker shows its successor).
    status, kept = await env.call(
        "PUT", PATH, token, json={"tools": ["url_context"], "aiModel": "gemini-2.0-flash"}
    )
    assert status == 200 and kept["aiModel"] == "gemini-2.0-flash"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tools": ["bing"]}, "tools"),
        ({"tools": "google_search"}, "tools"),
        ({}, "tools"),
        ({"tools": [], "aiModel": "gpt-5"}, "aiModel"),
        ({"tools": [], "aiModel": 7}, "aiModel"),
        ({"tools": [], "aiModel": "a\u0000b"}, "aiModel"),
    ],
)
async def test_preferences_refused(env: Env, body: dict[str, Any], field: str) -> None:
    status, refused = await env.call("PUT", PATH, json=body)
    assert status == 400 and refused["code"] == "invalid_request", refused
    assert str(refused.get("field")).startswith(field), refused
    assert (await env.call("GET", PATH))[1] == {"tools": [], "aiModel": None}


async def test_preferences_need_a_user(env: Env) -> None:
    async with env.http.get(env.live.url + PATH) as resp:
        assert resp.status == 401
    async with env.http.put(env.live.url + PATH, json={"tools": []}) as resp:
        assert resp.status == 401
