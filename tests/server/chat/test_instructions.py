"""Instructions through the whole server (docs/api.md, Instructions), on both engines: the
user's (``GET``/``PUT /api/user/instructions``) and a conversation's (``PATCH``), what the
Gemini stand-in receives in the system instruction, clearing, limits, foreign
conversations, and the demo model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from actors.context import CONVERSATION_SECTION, USER_SECTION
from server.storage.tables import Conversation
from standins.gemini import FakeGemini, Script
from tests import live_clients
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"
LIMIT = 300  # CERO_MAX_INSTRUCTIONS_CHARS here


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

    async def ask_gemini(self, text: str, conversation_id: str | None = None) -> tuple[str, str]:
        """A Gemini turn: the system instruction the stand-in received for it, and the
        conversation's id."""
        self.fake.enqueue(Script(chunks=["ok"]))
        body: dict[str, Any] = {"message": text, "aiModel": MODEL}
        if conversation_id is not None:
            body["conversationId"] = conversation_id
        lines = await live_clients.chat(self.http, self.live.url, self.token, **body)
        assert lines[-1]["topic"] == "done", lines[-1]
        request = self.fake.stream_requests()[-1].body
        assert request["contents"][-1] == {"role": "user", "parts": [{"text": text}]}
        system = str(request["systemInstruction"]["parts"][0]["text"])
        return system, str(lines[0]["data"]["conversationId"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with live_with_gemini(database_url, max_instructions_chars=LIMIT) as (live, fake):
        token, _ = await make_user_session("Ada")
        async with aiohttp.ClientSession() as http:
            yield Env(live, fake, http, token)


def conv_path(conversation_id: str) -> str:
    return f"/api/conversations/{conversation_id}"


async def test_user_instructions_round_trip_and_clear(env: Env) -> None:
    token, _ = await make_user_session("Fresh")
    assert await env.call("GET", "/api/user/instructions", token) == (200, {"instructions": None})
    put = await env.call("PUT", "/api/user/instructions", token, json={"instructions": "  hi  "})
    assert put == (200, {"instructions": "hi"})  # surrounding whitespace trimmed
    assert await env.call("GET", "/api/user/instructions", token) == (200, {"instructions": "hi"})
    for clearing in (None, "", " \n\t "):
        await env.call("PUT", "/api/user/instructions", token, json={"instructions": "x"})
        cleared = await env.call(
            "PUT", "/api/user/instructions", token, json={"instructions": clearing}
        )
        assert cleared == (200, {"instructions": None}), clearing
        got = await env.call("GET", "/api/user/instructions", token)
        assert got == (200, {"instructions": None})
    # Exactly the limit is fine (code points, not bytes).
    at_limit = "é" * LIMIT
    put = await env.call("PUT", "/api/user/instructions", token, json={"instructions": at_limit})
    assert put == (200, {"instructions": at_limit})


async def test_gemini_gets_both_in_the_system_instruction_and_clearing_removes_them(
    env: Env,
) -> None:
    status, _ = await env.call(
        "PUT", "/api/user/instructions", json={"instructions": "I am a botanist."}
    )
    assert status == 200
    first, conversation_id = await env.ask_gemini("what is a fern?")
    assert "<user_instructions>\nI am a botanist.\n</user_instructions>" in first
    assert first.index(USER_SECTION[0]) > 0 and CONVERSATION_SECTION[0] not in first
    # The conversation's own, set while its actor is alive: the next send sees it.
    status, body = await env.call(
        "PATCH", conv_path(conversation_id), json={"instructions": "Answer in French."}
    )
    assert status == 200, body
    assert body["conversation"]["instructions"] == "Answer in French."
    assert body["conversation"]["shortTitle"] == "what is a fern?"  # untouched
    second, _ = await env.ask_gemini("and a moss?", conversation_id)
    user_at = second.index("<user_instructions>\nI am a botanist.\n</user_instructions>")
    conv_at = second.index(
        "<conversation_instructions>\nAnswer in French.\n</conversation_instructions>"
    )
    assert user_at < conv_at
    status, shown = await env.call("GET", conv_path(conversation_id) + "/messages")
    assert status == 200 and shown["conversation"]["instructions"] == "Answer in French."
    status, tree = await env.call("GET", conv_path(conversation_id) + "/tree")
    assert status == 200 and tree["conversation"]["instructions"] == "Answer in French."
    status, page = await env.call("GET", "/api/conversations")
    assert all("instructions" not in c for c in page["conversations"])
    # Cleared (the user's with null, the conversation's with ""): gone from the next send.
    await env.call("PUT", "/api/user/instructions", json={"instructions": None})
    status, body = await env.call("PATCH", conv_path(conversation_id), json={"instructions": ""})
    assert status == 200 and "instructions" not in body["conversation"]
    third, _ = await env.ask_gemini("and a lichen?", conversation_id)
    assert "botanist" not in third and "French" not in third
    assert USER_SECTION[0] not in third and CONVERSATION_SECTION[0] not in third
    status, shown = await env.call("GET", conv_path(conversation_id) + "/messages")
    assert "instructions" not in shown["conversation"]
    row = (
        await Conversation.select(Conversation.instructions)
        .where(Conversation.id == conversation_id)
        .first()
        .run()
    )
    assert row is not None and row["instructions"] is None


async def test_another_users_instructions_never_reach_my_requests(env: Env) -> None:
    other, _ = await make_user_session("Eve")
    status, _ = await env.call(
        "PUT", "/api/user/instructions", other, json={"instructions": "EVE'S SECRET"}
    )
    assert status == 200
    system, _ = await env.ask_gemini("hello there")
    assert "EVE'S SECRET" not in system


async def test_bad_instructions_are_400_naming_the_field(env: Env) -> None:
    conversation_id = await live_clients.new_conversation(env.http, env.live.url, env.token)
    too_long = "x" * (LIMIT + 1)
    bad: list[tuple[Any, str]] = [
        ({"instructions": too_long}, "instructions"),
        ({"instructions": 5}, "instructions"),
        ({"instructions": ["a"]}, "instructions"),
        ({"instructions": "a\u0000b"}, "instructions"),
    ]
    for body, field in [*bad, ({}, "instructions"), ({"other": "x"}, "instructions")]:
        status, answer = await env.call("PUT", "/api/user/instructions", json=body)
        assert status == 400, (body, answer)
        assert answer["code"] == "invalid_request" and answer["field"] == field, answer
    for body, field in bad:
        status, answer = await env.call("PATCH", conv_path(conversation_id), json=body)
        assert status == 400, (body, answer)
        assert answer["code"] == "invalid_request" and answer["field"] == field, answer
    status, answer = await env.call("PUT", "/api/user/instructions", data=b"{oops")
    assert (status, answer["code"]) == (400, "invalid_json")
    # Nothing was stored by any of them.
    assert await env.call("GET", "/api/user/instructions") == (200, {"instructions": None})
    status, shown = await env.call("GET", conv_path(conversation_id) + "/messages")
    assert "instructions" not in shown["conversation"]


async def test_patch_keeps_the_rename_rules(env: Env) -> None:
    conversation_id = await live_clients.new_conversation(env.http, env.live.url, env.token)
    path = conv_path(conversation_id)
    # Neither field: the answer a body without shortTitle always had.
    empty: list[dict[str, Any]] = [{}, {"other": 1}]
    for body in empty:
        status, answer = await env.call("PATCH", path, json=body)
        assert (status, answer) == (
            400,
            {
                "error": "shortTitle: Field required",
                "code": "invalid_request",
                "field": "shortTitle",
            },
        )
    renames: list[dict[str, Any]] = [
        {"shortTitle": None},
        {"shortTitle": "   "},
        {"shortTitle": "x" * 101},
    ]
    for body in renames:
        status, answer = await env.call("PATCH", path, json=body)
        assert status == 400 and answer["field"] == "shortTitle", (body, answer)
    status, answer = await env.call(
        "PATCH", path, json={"shortTitle": "  Both   at once ", "instructions": "Be brief."}
    )
    assert status == 200, answer
    assert answer["conversation"]["shortTitle"] == "Both at once"
    assert answer["conversation"]["instructions"] == "Be brief."
    # A rename alone leaves the instructions; instructions alone leave the title.
    status, answer = await env.call("PATCH", path, json={"shortTitle": "Renamed"})
    assert answer["conversation"] == {**answer["conversation"], "instructions": "Be brief."}
    status, answer = await env.call("PATCH", path, json={"instructions": None})
    assert answer["conversation"]["shortTitle"] == "Renamed"
    assert "instructions" not in answer["conversation"]


async def test_a_foreign_conversation_is_404_and_untouched(env: Env) -> None:
    conversation_id = await live_clients.new_conversation(env.http, env.live.url, env.token)
    other, _ = await make_user_session("Mallory")
    theirs = await env.call(
        "PATCH", conv_path(conversation_id), other, json={"instructions": "obey me"}
    )
    missing = await env.call("PATCH", conv_path("nope"), other, json={"instructions": "obey me"})
    assert theirs == missing and theirs[0] == 404 and theirs[1]["code"] == "not_found"
    status, shown = await env.call("GET", conv_path(conversation_id) + "/messages")
    assert status == 200 and "instructions" not in shown["conversation"]


async def test_the_demo_model_still_answers_with_instructions(env: Env) -> None:
    token, _ = await make_user_session("Demo")
    await env.call("PUT", "/api/user/instructions", token, json={"instructions": "Be kind."})
    lines = await live_clients.chat(env.http, env.live.url, token, message="hi", aiModel="demo")
    conversation_id = lines[0]["data"]["conversationId"]
    await env.call("PATCH", conv_path(conversation_id), token, json={"instructions": "Be brief."})
    lines = await live_clients.chat(
        env.http,
        env.live.url,
        token,
        message="again",
        aiModel="demo",
        conversationId=conversation_id,
    )
    assert lines[-1]["topic"] == "done" and lines[-1]["data"]["fullText"]
