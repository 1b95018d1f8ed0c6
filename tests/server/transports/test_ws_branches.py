"""Branches over the WebSocket (docs/api.md, Branches and WebSocket), on both engines:
one device regenerates, edits, switches and continues; a second device subscribed to the
conversation sees every step live, in order, and its tokens add up to what is stored."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import WsPeer, check_seq, token_text

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"demo_token_delay": 0.005}


async def _peer(live: Live, http: aiohttp.ClientSession, token: str) -> WsPeer:
    return WsPeer(await http.ws_connect(f"{live.url}/api/ws?token={token}")).start()


def _ended(generation: str) -> Any:
    return lambda f: (
        f.get("type") in ("done", "error", "cancelled") and (f.get("generationId") == generation)
    )


async def test_a_second_device_follows_every_branch_operation(live: Live) -> None:
    token, _ = await make_user_session("Two devices")
    async with aiohttp.ClientSession() as http:
        a, b = await _peer(live, http, token), await _peer(live, http, token)
        await a.send(type="send", message="hello there", aiModel="demo")
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "send")
        cid, user1, answer1 = ack["conversationId"], ack["userMessageId"], ack["messageId"]
        await a.wait_for(_ended(ack["generationId"]))
        await b.send(type="subscribe", conversationId=cid)
        await b.wait_for(lambda f: f.get("type") == "subscribed")

        # Regenerate from A: B sees the init (action, the user message it hangs from) and
        # the new answer's tokens.
        await a.send(type="regenerate", conversationId=cid, messageId=user1)
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "regenerate")
        assert ack["userMessageId"] == user1 and ack["messageId"] != answer1
        answer2 = ack["messageId"]
        done = await b.wait_for(_ended(ack["generationId"]))
        init = next(f for f in b.of(cid, "init") if f["messageId"] == answer2)
        assert init["action"] == "regenerate" and init["userMessageId"] == user1
        assert token_text(b.of(cid), answer2) == done["fullText"]

        # Switch from A: B gets a branch event; A gets its ack.
        await a.send(type="switch", conversationId=cid, messageId=answer1)
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "switch")
        assert ack == {
            "type": "ack",
            "of": "switch",
            "conversationId": cid,
            "activeLeafId": answer1,
            "messageId": answer1,
        }
        branch = await b.wait_for(lambda f: f.get("type") == "branch")
        assert branch["activeLeafId"] == answer1 and branch["messageId"] == answer1

        # Edit from A: B sees the new user message (with its parent) and its answer.
        await a.send(type="edit", conversationId=cid, messageId=user1, message="hello again")
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "edit")
        done = await b.wait_for(_ended(ack["generationId"]))
        message = next(
            f for f in b.of(cid, "message") if f["message"]["id"] == ack["userMessageId"]
        )
        assert message["message"]["parentId"] is None
        assert message["message"]["content"] == "hello again"
        assert "hello again" in done["fullText"]

        # Bad targets are faults; the socket stays open.
        await a.send(type="continue", conversationId=cid, messageId=ack["messageId"])
        fault = await a.wait_for(lambda f: f.get("type") == "fault")
        assert fault["code"] == "not_continuable"
        await a.send(type="switch", conversationId=cid, messageId="missing")
        fault = await a.wait_for(lambda f: f.get("type") == "fault" and f["code"] == "not_found")
        await a.send(type="edit", conversationId=cid, messageId=user1)
        fault = await a.wait_for(
            lambda f: f.get("type") == "fault" and f["code"] == "invalid_frame"
        )
        assert "message" in fault["error"]

        check_seq(b.of(cid))
        async with http.get(
            f"{live.url}/api/conversations/{cid}/messages", headers=bearer(token)
        ) as resp:
            body = await resp.json()
        assert [m["id"] for m in body["messages"]] == [ack["userMessageId"], ack["messageId"]]
        assert body["messages"][0]["siblingCount"] == 2
        await a.close()
        await b.close()


async def test_continue_over_the_websocket(live: Live) -> None:
    token, _ = await make_user_session("WS continue")
    async with aiohttp.ClientSession() as http:
        a, b = await _peer(live, http, token), await _peer(live, http, token)
        await a.send(type="send", message="count with me", aiModel="demo")
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "send")
        cid, answer = ack["conversationId"], ack["messageId"]
        await a.wait_for(lambda f: f.get("type") == "token")
        await a.send(type="cancel", conversationId=cid)
        await a.wait_for(lambda f: f.get("type") == "cancelled")
        await b.send(type="subscribe", conversationId=cid)
        await b.wait_for(lambda f: f.get("type") == "subscribed")
        await a.send(type="continue", conversationId=cid, messageId=answer)
        ack = await a.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "continue")
        assert ack["messageId"] == answer
        done = await b.wait_for(_ended(ack["generationId"]))
        init = next(f for f in b.of(cid, "init") if f["generationId"] == ack["generationId"])
        assert init["action"] == "continue"
        # From the continue's init on, B's tokens add up to the whole stored answer.
        after = [f for f in b.of(cid) if f["seq"] > init["seq"]]
        assert token_text(after, answer) == done["fullText"]
        async with http.get(
            f"{live.url}/api/conversations/{cid}/messages", headers=bearer(token)
        ) as resp:
            body = await resp.json()
        assert body["messages"][-1]["content"] == done["fullText"]
        assert len(body["messages"]) == 2
        await a.close()
        await b.close()
