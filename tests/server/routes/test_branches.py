"""Branches over real HTTP (docs/api.md, Branches), on both engines: regenerate, edit,
switch, continue, the tree, and what an older client still sees (a straight path)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from server.storage.tables import Message
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import chat, read_ndjson, read_sse

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.02}  # a cancel lands mid-answer


async def _post(
    http: aiohttp.ClientSession, token: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    async with http.post(url, json=body if body is not None else {}, headers=bearer(token)) as r:
        if r.status != 200:
            return r.status, [orjson.loads(await r.read())]
        if r.content_type == "application/json":
            return 200, [await r.json()]
        return 200, await read_ndjson(r)


async def _messages(http: aiohttp.ClientSession, live: Live, token: str, cid: str) -> Any:
    async with http.get(
        f"{live.url}/api/conversations/{cid}/messages", headers=bearer(token)
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def _turn(live: Live, cid: str, mid: str, op: str) -> str:
    return f"{live.url}/api/conversations/{cid}/messages/{mid}/{op}"


def _text(lines: list[dict[str, Any]]) -> str:
    return "".join(line["data"] for line in lines if line["topic"] == "token")


async def test_regenerate_edit_switch_and_the_tree(live: Live) -> None:
    token, _ = await make_user_session("Branches")
    async with aiohttp.ClientSession() as http:
        first = await chat(http, live.url, token, message="one two", aiModel="demo")
        init = first[0]["data"]
        cid, user1, answer1 = init["conversationId"], init["userMessageId"], init["messageId"]
        second = await chat(
            http, live.url, token, message="three", aiModel="demo", conversationId=cid
        )
        user2, answer2 = second[0]["data"]["userMessageId"], second[0]["data"]["messageId"]

        # Regenerate the first answer: a sibling of answer1; the path ends there now.
        status, lines = await _post(http, token, _turn(live, cid, user1, "regenerate"))
        assert status == 200, lines
        assert lines[0]["topic"] == "init"
        regen = lines[0]["data"]
        assert regen["action"] == "regenerate" and regen["userMessageId"] == user1
        assert lines[-1]["topic"] == "done"
        assert lines[-1]["data"]["fullText"] == _text(lines)
        answer1b = regen["messageId"]
        body = await _messages(http, live, token, cid)
        path = [m["id"] for m in body["messages"]]
        assert path == [user1, answer1b] and body["activeLeafId"] == answer1b
        assert body["messages"][1]["siblingIds"] == [answer1, answer1b]
        assert body["messages"][1]["siblingIndex"] == 1
        assert body["messages"][1]["siblingCount"] == 2
        assert body["messages"][1]["parentId"] == user1
        assert body["messages"][0]["parentId"] is None
        assert body["messages"][0]["siblingCount"] == 1

        # Switch back to the first answer: its newest descendants follow (user2, answer2).
        status, lines = await _post(http, token, _turn(live, cid, answer1, "switch"))
        assert status == 200 and lines == [{"activeLeafId": answer2, "messageId": answer1}]
        body = await _messages(http, live, token, cid)
        assert [m["id"] for m in body["messages"]] == [user1, answer1, user2, answer2]
        assert body["messages"][1]["siblingIndex"] == 0

        # Edit the second user message: a new user sibling and its answer.
        status, lines = await _post(
            http, token, _turn(live, cid, user2, "edit"), {"message": "three, edited"}
        )
        assert status == 200, lines
        edited = lines[0]["data"]
        assert edited["action"] == "edit" and edited["userMessageId"] != user2
        assert "three, edited" in lines[-1]["data"]["fullText"]
        body = await _messages(http, live, token, cid)
        ids = [m["id"] for m in body["messages"]]
        assert ids == [user1, answer1, edited["userMessageId"], edited["messageId"]]
        assert body["messages"][2]["siblingIds"] == [user2, edited["userMessageId"]]
        assert body["messages"][2]["content"] == "three, edited"
        # The model saw the path to the edited message, not the older branch: 3 messages.
        assert "I can see 3 messages" in body["messages"][3]["content"]

        # A plain send appends to the active path, as for any older client.
        third = await chat(
            http, live.url, token, message="four", aiModel="demo", conversationId=cid
        )
        assert third[-1]["topic"] == "done"
        body = await _messages(http, live, token, cid)
        assert [m["id"] for m in body["messages"]][:4] == ids
        assert body["messages"][4]["parentId"] == edited["messageId"]

        # The tree holds every branch, oldest first.
        async with http.get(
            f"{live.url}/api/conversations/{cid}/tree", headers=bearer(token)
        ) as resp:
            tree = await resp.json()
        assert len(tree["messages"]) == 9
        assert tree["activeLeafId"] == body["activeLeafId"]
        assert {m["id"] for m in tree["messages"]} >= {answer1, answer1b, user2, answer2}

        # Deleting the conversation deletes every branch.
        async with http.delete(
            f"{live.url}/api/conversations/{cid}", headers=bearer(token)
        ) as resp:
            assert resp.status == 200
        async with http.get(
            f"{live.url}/api/conversations/{cid}/tree", headers=bearer(token)
        ) as resp:
            assert resp.status == 404
        assert await Message.count().where(Message.conversation_id == cid).run() == 0


async def test_continue_a_cancelled_answer(live: Live) -> None:
    """A cancelled answer goes on in the same message: the first token is its text so far,
    so the tokens add up to fullText and to the stored message."""
    token, _ = await make_user_session("Continue")
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="warm up", aiModel="demo")
        cid = lines[0]["data"]["conversationId"]
        async with http.post(
            f"{live.url}/api/chat",
            json={"message": "a longer question here", "aiModel": "demo", "conversationId": cid},
            headers={**bearer(token), "Accept": "text/event-stream"},
        ) as resp:
            answer = ""
            tokens = 0
            async for event in read_sse(resp):
                if event.event == "init":
                    answer = event.data["messageId"]
                tokens += event.event == "token"
                if event.event == "token" and tokens == 3:
                    async with http.post(
                        f"{live.url}/api/conversations/{cid}/cancel", headers=bearer(token), json={}
                    ) as cancel:
                        assert (await cancel.json())["cancelled"] is True
                if event.event in ("done", "cancelled", "error"):
                    assert event.event == "cancelled"
                    break
        body = await _messages(http, live, token, cid)
        stored = body["messages"][-1]
        assert stored["id"] == answer and stored["status"] == "cancelled"
        partial = stored["content"]

        status, lines = await _post(http, token, _turn(live, cid, answer, "continue"))
        assert status == 200, lines
        init = lines[0]["data"]
        assert init["action"] == "continue" and init["messageId"] == answer
        assert lines[1] == {"topic": "token", "data": partial}
        done = lines[-1]["data"]
        assert done["fullText"] == _text(lines) and done["fullText"].startswith(partial)
        assert done["messageId"] == answer
        body = await _messages(http, live, token, cid)
        assert body["messages"][-1]["content"] == done["fullText"]
        assert body["messages"][-1]["status"] == "complete"
        assert len(body["messages"]) == 4  # the same message, not a new one

        # Complete with STOP: not continuable (nor is a user message).
        status, lines = await _post(http, token, _turn(live, cid, answer, "continue"))
        assert status == 409 and lines[0]["code"] == "not_continuable"
        user = body["messages"][-2]["id"]
        status, lines = await _post(http, token, _turn(live, cid, user, "continue"))
        assert status == 409 and lines[0]["code"] == "not_continuable"


async def test_bad_targets_and_foreign_conversations(live: Live) -> None:
    token, _ = await make_user_session("Targets")
    other, _ = await make_user_session("Other")
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="hello", aiModel="demo")
        init = lines[0]["data"]
        cid, user1, answer1 = init["conversationId"], init["userMessageId"], init["messageId"]
        for op in ("regenerate", "edit", "continue", "switch"):
            body = {"message": "x"} if op == "edit" else {}
            status, out = await _post(http, token, _turn(live, cid, "nope", op), body)
            assert status == 404 and out[0]["code"] == "not_found", (op, out)
            status, out = await _post(http, other, _turn(live, cid, user1, op), body)
            assert status == 404 and out[0]["code"] == "not_found", (op, out)
        status, out = await _post(http, token, _turn(live, cid, answer1, "edit"), {"message": "x"})
        assert status == 400 and out[0]["field"] == "messageId"
        status, out = await _post(http, token, _turn(live, cid, user1, "edit"), {"message": "  "})
        assert status == 400 and out[0]["field"] == "message"
        status, out = await _post(http, token, _turn(live, cid, user1, "edit"), {"message": 5})
        assert status == 400 and out[0]["field"] == "message"
        status, out = await _post(
            http, token, _turn(live, cid, user1, "regenerate"), {"tools": "x"}
        )
        assert status == 400 and out[0]["field"] == "tools"
        async with http.post(
            _turn(live, cid, user1, "regenerate"), data=b"{nope", headers=bearer(token)
        ) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "invalid_json"
        status, out = await _post(
            http, token, _turn(live, cid, user1, "regenerate"), {"aiModel": "zz"}
        )
        assert status == 400 and out[0]["code"] == "unknown_model"
        async with http.post(_turn(live, cid, user1, "switch")) as resp:
            assert resp.status == 401


async def test_busy_conversation_refuses_every_branch_operation(live: Live) -> None:
    token, _ = await make_user_session("Busy")
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="hello", aiModel="demo")
        init = lines[0]["data"]
        cid, user1, answer1 = init["conversationId"], init["userMessageId"], init["messageId"]
        async with http.post(
            f"{live.url}/api/chat",
            json={"message": "slow " * 40, "aiModel": "demo", "conversationId": cid},
            headers=bearer(token),
        ) as running:
            await running.content.readline()  # init: generating now
            for op, mid in (("regenerate", user1), ("edit", user1), ("switch", answer1)):
                body = {"message": "x"} if op == "edit" else {}
                status, out = await _post(http, token, _turn(live, cid, mid, op), body)
                assert status == 409 and out[0]["code"] == "conversation_busy", (op, out)
            await read_ndjson(running)


async def test_a_retried_regenerate_starts_one_generation(live: Live) -> None:
    token, _ = await make_user_session("Retry")
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="hello", aiModel="demo")
        init = lines[0]["data"]
        cid, user1 = init["conversationId"], init["userMessageId"]
        url = _turn(live, cid, user1, "regenerate")
        first, again = await asyncio.gather(
            _post(http, token, url, {"clientMessageId": "regen-1"}),
            _post(http, token, url, {"clientMessageId": "regen-1"}),
        )
        assert first[0] == again[0] == 200
        assert first[1][0]["data"]["generationId"] == again[1][0]["data"]["generationId"]
        assert first[1][-1]["data"]["fullText"] == again[1][-1]["data"]["fullText"]
        async with http.get(
            f"{live.url}/api/conversations/{cid}/tree", headers=bearer(token)
        ) as resp:
            tree = await resp.json()
        assert len(tree["messages"]) == 3  # one user message, two answers


async def test_what_the_original_cero_cli_sees_is_unchanged(live: Live) -> None:
    """The original Cero CLI (cerocode): POST /api/chat without Accept, NDJSON
    `{topic, data}` lines with the seed's init fields (no `action`), and the messages list
    of a conversation that branched is one straight path with every field it reads."""
    token, _ = await make_user_session("Original CLI")
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="first", aiModel="demo")
        init = lines[0]
        assert init["topic"] == "init"
        assert set(init["data"]) == {
            "conversationId",
            "messageId",
            "userMessageId",
            "generationId",
            "aiModel",
        }
        cid, user1 = init["data"]["conversationId"], init["data"]["userMessageId"]
        status, _ = await _post(http, token, _turn(live, cid, user1, "regenerate"))
        assert status == 200
        lines = await chat(http, live.url, token, message="second", conversationId=cid)
        assert lines[0]["topic"] == "init"
        assert lines[-1]["topic"] == "done"
        body = await _messages(http, live, token, cid)
        assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2
        for message in body["messages"]:
            assert {"id", "role", "content", "status", "createdAt", "timestamp"} <= set(message)
        assert body["messages"][-1]["content"] == lines[-1]["data"]["fullText"]


async def test_branch_operations_stream_server_sent_events(live: Live) -> None:
    """With ``Accept: text/event-stream`` a regenerate and an edit stream SSE like
    ``POST /api/chat`` (a continue takes the same path; its NDJSON test is above): each
    event with its cursor as ``id:``, from the turn's first event (an edit's user
    ``message``, else ``init``) to its terminal event, the tokens adding up to
    ``fullText``."""
    token, _ = await make_user_session("SSE branches")
    sse = {**bearer(token), "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        lines = await chat(http, live.url, token, message="sse first", aiModel="demo")
        cid, user1 = lines[0]["data"]["conversationId"], lines[0]["data"]["userMessageId"]
        for op, body, first in (
            ("regenerate", {}, "init"),
            ("edit", {"message": "sse edited"}, "message"),
        ):
            target = user1
            async with http.post(_turn(live, cid, target, op), json=body, headers=sse) as resp:
                assert resp.status == 200
                assert resp.content_type == "text/event-stream"
                events = [event async for event in read_sse(resp)]
            kinds = [event.event for event in events if event.event != "presence"]
            assert kinds[0] == first and kinds[-1] == "done", kinds
            assert all(event.id for event in events)
            init = next(event.data for event in events if event.event == "init")
            assert init["action"] == op
            text = "".join(
                event.data["text"]
                for event in events
                if event.event == "token" and event.data["messageId"] == init["messageId"]
            )
            assert text == events[-1].data["fullText"]
