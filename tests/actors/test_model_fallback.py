"""The embedded default for existing clients: in local mode (no BETTER_AUTH_SECRET) a Gemini
id is answered by ``demo``; with a secret set it stays ``400 unknown_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from actors.models.catalog import Catalog, UnknownModel
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import live_app
from tests.live_clients import chat_result

async_test = pytest.mark.asyncio(loop_scope="module")


async def ndjson_chat(url: str, token: str, **body: Any) -> tuple[int, list[dict[str, Any]]]:
    """What the original Cero CLI does: POST /api/chat, no Accept, NDJSON lines back."""
    async with aiohttp.ClientSession() as http:
        return await chat_result(http, url, token, **body)


def test_catalog_falls_back_only_when_asked() -> None:
    local = Catalog.load(gemini_enabled=False, offline_fallback=True)
    assert local.resolve("gemini-2.5-flash-lite").id == "demo"
    assert local.resolve("models/gemini-3.5-flash").id == "demo"
    assert local.resolve("gemini-1.5-pro-latest").id == "demo"  # a retired id too
    assert local.fallbacks()["gemini-2.5-flash-lite"] == "demo"
    with pytest.raises(UnknownModel):
        local.resolve("gpt-5")  # not a catalog id: still unknown
    production = Catalog.load(gemini_enabled=False, offline_fallback=False)
    with pytest.raises(UnknownModel, match="not available"):
        production.resolve("gemini-2.5-flash-lite")
    assert production.fallbacks() == {}
    keyed = Catalog.load(gemini_enabled=True, offline_fallback=True)  # a key wins
    assert keyed.resolve("gemini-2.5-flash-lite").id == "gemini-2.5-flash-lite"
    assert keyed.fallbacks() == {}


@async_test
async def test_local_mode_answers_gemini_ids_with_demo(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cero.db'}"
    with structlog.testing.capture_logs() as logs:
        async with live_app(url, secret=None) as live:
            assert live.settings.local_mode and live.settings.secret is None
            token, _ = await make_user_session()
            status, lines = await ndjson_chat(
                live.url, token, message="hi", aiModel="gemini-2.5-flash-lite"
            )
            assert status == 200, lines
            assert lines[0]["topic"] == "init" and lines[0]["data"]["aiModel"] == "demo"
            assert lines[-1]["topic"] == "done"
            conversation = lines[0]["data"]["conversationId"]
            status, again = await ndjson_chat(
                live.url,
                token,
                message="again",
                aiModel="gemini-2.5-flash-lite",
                conversationId=conversation,
            )
            assert status == 200 and again[0]["data"]["aiModel"] == "demo"
            async with aiohttp.ClientSession() as http:
                path = f"{live.url}/api/conversations/{conversation}/messages"
                async with http.get(path, headers=bearer(token)) as resp:
                    messages = (await resp.json())["messages"]
                async with http.get(live.url + "/api/models") as resp:
                    models = await resp.json()
    answers = [m for m in messages if m["role"] == "assistant"]
    assert [m["aiModel"] for m in answers] == ["demo", "demo"]
    assert models["fallbacks"]["gemini-2.5-flash-lite"] == "demo"
    assert "answered by demo" in models["note"]
    assert [m["id"] for m in models["models"]] == ["demo"]
    said = [e for e in logs if e["event"] == "model_fallback"]
    assert len(said) == 1  # once, not per request
    assert said[0]["requested"] == "gemini-2.5-flash-lite" and said[0]["answered_by"] == "demo"


@async_test
async def test_with_a_secret_an_unavailable_model_stays_400(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cero.db'}"
    async with live_app(url) as live:
        assert live.settings.secret is not None
        token, _ = await make_user_session()
        status, body = await ndjson_chat(
            live.url, token, message="hi", aiModel="gemini-2.5-flash-lite"
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(live.url + "/api/models") as resp:
                models = await resp.json()
    assert status == 400 and body[0]["code"] == "unknown_model"
    assert "fallbacks" not in models
