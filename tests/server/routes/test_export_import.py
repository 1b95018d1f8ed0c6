"""Export and import over real HTTP, on both engines (docs/api.md, "Export and import"):
a round-trip property over random trees, all-or-nothing imports, the limits, another
user's conversation, Markdown's active path, streaming answers and the account export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core.ids import new_id
from server.storage.tables import Conversation, Message
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_CONVERSATIONS = 5
MAX_MESSAGES = 40
MAX_BYTES = 64 * 1024
#: Below the import's own limit: the import route is not held to it, the others are.
MAX_BODY = 16 * 1024


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {
        "max_import_conversations": MAX_CONVERSATIONS,
        "max_import_messages": MAX_MESSAGES,
        "max_import_bytes": MAX_BYTES,
        "max_body": MAX_BODY,
    }


# -- building conversations straight in the tables ----------------------------------------

STATUSES = ("complete", "streaming", "cancelled", "error", "interrupted")
# No lone surrogates: neither JSON (orjson) nor PostgreSQL (asyncpg) carries them.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Any]:
    """A conversation: messages whose parents alternate roles (user first), any statuses,
    any active leaf."""
    count = draw(st.integers(1, 12))
    messages: list[dict[str, Any]] = [
        {"role": "user", "parent": None, "content": draw(text), "status": "complete"}
    ]
    for _ in range(count - 1):
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        user_next: bool = draw(st.booleans())
        if answers and user_next:
            parent = draw(st.sampled_from([None, *answers]))
            messages.append({"role": "user", "parent": parent, "content": draw(text)})
            messages[-1]["status"] = "complete"
        else:
            messages.append(
                {
                    "role": "assistant",
                    "parent": draw(st.sampled_from(users)),
                    "content": draw(text),
                    "status": draw(st.sampled_from(STATUSES)),
                    "model": draw(st.sampled_from([None, "demo", "gemini-2.5-pro"])),
                    "usage": draw(st.sampled_from([None, {"promptTokens": 3, "totalTokens": 9}])),
                    "finish": draw(st.sampled_from([None, "STOP", "MAX_TOKENS"])),
                }
            )
    title = " ".join(draw(text).split())
    leaf = draw(st.sampled_from(range(len(messages))))
    return {"title": title, "messages": messages, "leaf": leaf}


async def store_tree(user_id: str, tree: dict[str, Any]) -> str:
    """The conversation in the tables, one millisecond between messages."""
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    conversation_id = new_id()
    ids = [new_id() for _ in tree["messages"]]
    await Conversation.insert(
        Conversation(
            id=conversation_id,
            user_id=user_id,
            short_title=tree["title"],
            active_leaf_id=ids[tree["leaf"]],
            created_at=start,
            updated_at=start + timedelta(hours=1),
        )
    ).run()
    rows = []
    for i, m in enumerate(tree["messages"]):
        rows.append(
            Message(
                id=ids[i],
                conversation_id=conversation_id,
                role=m["role"],
                content=m["content"],
                status=m["status"],
                model=m.get("model"),
                usage=m.get("usage"),
                finish_reason=m.get("finish"),
                parent_id=None if m["parent"] is None else ids[m["parent"]],
                created_at=start + timedelta(milliseconds=i),
                updated_at=start,
            )
        )
    await Message.insert(*rows).run()
    return conversation_id


# -- HTTP ----------------------------------------------------------------------------------


async def export(live: Live, token: str, path: str, fmt: str = "json") -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(live.url + path, params={"format": fmt}, headers=bearer(token)) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


async def export_one(live: Live, token: str, conversation_id: str) -> dict[str, Any]:
    status, _, body = await export(live, token, f"/api/conversations/{conversation_id}/export")
    assert status == 200, body
    answer: dict[str, Any] = orjson.loads(body)
    return answer


async def post_import(live: Live, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            live.url + "/api/import",
            data=body,
            headers={**bearer(token), "Content-Type": "application/json"},
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def canonical(conversation: dict[str, Any]) -> dict[str, Any]:
    """A conversation with its ids replaced by positions; ``streaming`` as an import
    stores it (``interrupted``)."""
    position = {m["id"]: i for i, m in enumerate(conversation["messages"])}
    messages = []
    for m in conversation["messages"]:
        out = {k: v for k, v in m.items() if k not in ("id", "parentId")}
        out["parent"] = None if m["parentId"] is None else position[m["parentId"]]
        if out["status"] == "streaming":
            out["status"] = "interrupted"
        messages.append(out)
    leaf = conversation["activeLeafId"]
    return {
        "shortTitle": conversation["shortTitle"],
        "createdAt": conversation["createdAt"],
        "updatedAt": conversation["updatedAt"],
        "leaf": None if leaf is None else position[leaf],
        "messages": messages,
    }


def active_path(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {m["id"]: m for m in conversation["messages"]}
    path, current = [], conversation["activeLeafId"]
    while current is not None:
        path.append(by_id[current])
        current = by_id[current]["parentId"]
    return path[::-1]


# -- the round trip ------------------------------------------------------------------------


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees())
async def test_round_trip(live: Live, tree: dict[str, Any]) -> None:
    """Random tree → export → import → export: the same conversation but for its ids, a
    ``streaming`` answer now ``interrupted``."""
    token, user_id = await make_user_session("Round trip")
    original_id = await store_tree(user_id, tree)
    first = await export_one(live, token, original_id)
    assert first["format"] == "cero-export" and first["version"] == 2
    (exported,) = first["conversations"]
    # The export is the stored tree: every message, its text, role and status.
    assert [m["content"] for m in exported["messages"]] == [m["content"] for m in tree["messages"]]
    assert [m["status"] for m in exported["messages"]] == [m["status"] for m in tree["messages"]]
    status, answer = await post_import(live, token, orjson.dumps(first))
    assert status == 200, answer
    (made,) = answer["conversations"]
    assert made["importedFrom"] == original_id and made["id"] != original_id
    assert made["shortTitle"] == exported["shortTitle"]
    second = await export_one(live, token, made["id"])
    (again,) = second["conversations"]
    assert not {m["id"] for m in again["messages"]} & {m["id"] for m in exported["messages"]}
    assert canonical(again) == canonical(exported)
    assert [m["content"] for m in active_path(again)] == [
        m["content"] for m in active_path(exported)
    ]
    # The imported conversation is an ordinary one: its active path is what …/messages shows.
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{live.url}/api/conversations/{made['id']}/messages", headers=bearer(token)
        ) as resp,
    ):
        shown = await resp.json()
    assert [m["id"] for m in shown["messages"]] == [m["id"] for m in active_path(again)]


# -- refusals --------------------------------------------------------------------------------


def small_file(conversations: int = 2, answers: int = 2) -> dict[str, Any]:
    out = []
    for c in range(conversations):
        messages: list[dict[str, Any]] = []
        for a in range(answers):
            parent = messages[-1]["id"] if messages else None
            messages.append(
                {
                    "id": f"u{c}.{a}",
                    "parentId": parent,
                    "role": "user",
                    "content": f"question {a}",
                    "status": "complete",
                    "createdAt": f"2026-11-01T12:00:0{a}.000Z",
                }
            )
            messages.append(
                {
                    "id": f"a{c}.{a}",
                    "parentId": f"u{c}.{a}",
                    "role": "assistant",
                    "content": f"answer {a}",
                    "status": "complete",
                    "createdAt": f"2026-11-01T12:00:0{a}.500Z",
                    "aiModel": "demo",
                }
            )
        out.append(
            {
                "id": f"c{c}",
                "shortTitle": f"conversation {c}",
                "createdAt": "2026-11-01T12:00:00.000Z",
                "updatedAt": "2026-11-01T12:00:02.000Z",
                "activeLeafId": messages[-1]["id"],
                "messages": messages,
            }
        )
    return {"format": "cero-export", "version": 1, "conversations": out}


async def count_conversations(user_id: str) -> int:
    return int(await Conversation.count().where(Conversation.user_id == user_id).run())


@pytest.mark.parametrize(
    ("spoil", "field", "words"),
    [
        (
            lambda f: f["conversations"][1]["messages"][3].update(parentId="nope"),
            "conversations[1].messages[3].parentId",
            "unknown message",
        ),
        (
            lambda f: f["conversations"][1]["messages"][0].update(parentId="a1.1"),
            "conversations[1].messages[0].parentId",
            "cycle",
        ),
        (
            lambda f: f["conversations"][1]["messages"][2].update(id="u1.0"),
            "conversations[1].messages[2].id",
            "duplicate",
        ),
        (
            lambda f: f["conversations"][1]["messages"][1].update(role="user"),
            "conversations[1].messages[1].parentId",
            "follow an answer",
        ),
        (
            lambda f: f["conversations"][1]["messages"][3].update(content="a\x00b"),
            "conversations[1].messages[3].content",
            "NUL",
        ),
        (
            lambda f: f["conversations"][1]["messages"][3].update(status="done"),
            "conversations[1].messages[3].status",
            "",
        ),
        (
            lambda f: f["conversations"][1].update(activeLeafId="gone"),
            "conversations[1].activeLeafId",
            "unknown message",
        ),
        (lambda f: f.update(version=3), "version", ""),
    ],
)
async def test_a_bad_file_imports_nothing(live: Live, spoil: Any, field: str, words: str) -> None:
    """The problem is deep in the second conversation: the first, valid, is not kept."""
    token, user_id = await make_user_session("Bad file")
    file = small_file()
    spoil(file)
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 400, answer
    assert answer["code"] == "invalid_import" and answer["field"] == field, answer
    assert answer["error"].startswith(field + ": ") and words in answer["error"], answer
    assert await count_conversations(user_id) == 0


async def test_a_write_that_fails_halfway_keeps_nothing(live: Live) -> None:
    """A row the database refuses after the first conversation's rows went in (a message
    id that already exists): the transaction takes every row back."""
    _token, user_id = await make_user_session("Halfway")
    from server.storage import importing

    file = small_file(conversations=3)
    checked = importing.check(file, importing.ImportLimits(10, 100))
    planned = importing.plan(checked, user_id, datetime.now(UTC))
    existing = await store_tree(
        user_id,
        {
            "title": "t",
            "messages": [{"role": "user", "parent": None, "content": "x", "status": "complete"}],
            "leaf": 0,
        },
    )
    (taken,) = await Message.select(Message.id).where(Message.conversation_id == existing).run()
    planned.messages[-1].id = taken["id"]  # the last row of the last insert collides
    with pytest.raises(Exception):  # noqa: B017 - whichever driver's integrity error
        await importing.write_import(planned)
    assert await count_conversations(user_id) == 1  # only the one stored above
    assert planned.messages[0].id not in {r["id"] for r in await Message.select(Message.id).run()}


async def test_limits(live: Live) -> None:
    token, user_id = await make_user_session("Limits")
    status, answer = await post_import(
        live, token, orjson.dumps(small_file(conversations=MAX_CONVERSATIONS + 1, answers=1))
    )
    assert (status, answer["code"]) == (413, "payload_too_large"), answer
    status, answer = await post_import(
        live, token, orjson.dumps(small_file(conversations=2, answers=MAX_MESSAGES // 4 + 1))
    )
    assert (status, answer["code"]) == (413, "payload_too_large"), answer
    big = small_file(conversations=1, answers=1)
    big["conversations"][0]["messages"][1]["content"] = "x" * MAX_BYTES
    status, answer = await post_import(live, token, orjson.dumps(big))
    assert (status, answer["code"]) == (413, "payload_too_large"), answer
    assert await count_conversations(user_id) == 0
    # Over CERO_MAX_BODY is fine on this route, within the import's own limit; every
    # other route keeps CERO_MAX_BODY.
    fits = small_file(conversations=1, answers=1)
    fits["conversations"][0]["messages"][1]["content"] = "y" * (MAX_BYTES - 2000)
    assert len(orjson.dumps(fits)) > MAX_BODY
    status, answer = await post_import(live, token, orjson.dumps(fits))
    assert status == 200, answer
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"{live.url}/api/conversations/{answer['conversations'][0]['id']}",
            json={"shortTitle": "y" * (MAX_BODY + 10)},
            headers=bearer(token),
        ) as resp,
    ):
        assert resp.status == 413, await resp.text()
    # Chunked (no Content-Length): counted as it arrives.

    async def chunks() -> Any:
        yield orjson.dumps(big)

    async with (
        aiohttp.ClientSession() as http,
        http.post(live.url + "/api/import", data=chunks(), headers=bearer(token)) as resp,
    ):
        assert resp.status == 413, await resp.text()
    status, answer = await post_import(live, token, b"{nope")
    assert (status, answer["code"]) == (400, "invalid_json")


async def test_import_ids_and_streaming(live: Live) -> None:
    token, _user_id = await make_user_session("Import")
    file = small_file(conversations=2)
    file["conversations"][0]["messages"][3]["status"] = "streaming"
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 200, answer
    assert [c["importedFrom"] for c in answer["conversations"]] == ["c0", "c1"]
    assert [c["shortTitle"] for c in answer["conversations"]] == [
        "conversation 0",
        "conversation 1",
    ]
    again = await export_one(live, token, answer["conversations"][0]["id"])
    (conversation,) = again["conversations"]
    assert conversation["messages"][3]["status"] == "interrupted"
    assert conversation["activeLeafId"] == conversation["messages"][3]["id"]
    assert conversation["createdAt"] == "2026-11-01T12:00:00.000Z"
    assert [m["createdAt"] for m in conversation["messages"]] == [
        m["createdAt"] for m in file["conversations"][0]["messages"]
    ]


# -- export ------------------------------------------------------------------------------------


async def test_another_users_conversation_is_not_exported(live: Live) -> None:
    _a_token, a_id = await make_user_session("A")
    b_token, _ = await make_user_session("B")
    tree = {
        "title": "secret",
        "messages": [
            {"role": "user", "parent": None, "content": "private words", "status": "complete"}
        ],
        "leaf": 0,
    }
    conversation_id = await store_tree(a_id, tree)
    theirs = await export(live, b_token, f"/api/conversations/{conversation_id}/export")
    missing = await export(live, b_token, f"/api/conversations/{new_id()}/export")
    assert theirs[0] == 404 and theirs[2] == missing[2]
    status, _, body = await export(live, b_token, "/api/export")
    assert status == 200 and b"private words" not in body
    assert orjson.loads(body)["conversations"] == []


async def test_markdown_shows_the_active_path(live: Live) -> None:
    token, user_id = await make_user_session("Markdown")
    tree = {
        "title": "Branches",
        "messages": [
            {"role": "user", "parent": None, "content": "first question", "status": "complete"},
            {
                "role": "assistant",
                "parent": 0,
                "content": "old answer",
                "status": "complete",
                "model": "demo",
            },
            {
                "role": "assistant",
                "parent": 0,
                "content": "new answer",
                "status": "streaming",
                "model": "demo",
            },
        ],
        "leaf": 2,
    }
    conversation_id = await store_tree(user_id, tree)
    status, headers, body = await export(
        live, token, f"/api/conversations/{conversation_id}/export", "markdown"
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/markdown")
    assert headers["Content-Disposition"] == (
        f'attachment; filename="cero-conversation-{conversation_id}.md"'
    )
    text = body.decode()
    assert text.startswith("# Branches\n")
    assert text.index("**You**") < text.index("first question")
    assert text.index("first question") < text.index("**Assistant (demo)** · version 2 of 2")
    assert "new answer" in text and "old answer" not in text
    assert "still being written" in text
    assert "1 more message" in text
    # JSON: a streaming answer exported as stored, with its status.
    (exported,) = (await export_one(live, token, conversation_id))["conversations"]
    assert [m["status"] for m in exported["messages"]] == ["complete", "complete", "streaming"]
    assert exported["activeLeafId"] == exported["messages"][2]["id"]


async def test_account_export_pages_through_every_conversation(live: Live) -> None:
    """More conversations than one page: each once, oldest first, streamed chunked."""
    from server.storage.exporting import PAGE

    token, user_id = await make_user_session("Account")
    made = []
    for i in range(PAGE + 3):
        tree = {
            "title": f"n{i}",
            "messages": [
                {"role": "user", "parent": None, "content": f"m{i}", "status": "complete"}
            ],
            "leaf": 0,
        }
        made.append(await store_tree(user_id, tree))
    status, headers, body = await export(live, token, "/api/export")
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert headers["Content-Disposition"].startswith('attachment; filename="cero-export-')
    file = orjson.loads(body)
    assert sorted(c["id"] for c in file["conversations"]) == sorted(made)
    status, _, body = await export(live, token, "/api/export", "markdown")
    assert status == 200 and body.decode().count("\n---\n") == PAGE + 2
    status, _answer = await post_import(live, token, orjson.dumps(file))
    assert status == 413  # past this module's conversation limit
    status, _, body = await export(live, token, "/api/export", "yaml")
    assert status == 400 and orjson.loads(body)["field"] == "format"
