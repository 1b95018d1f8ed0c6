"""Attachments in the export and import (docs/api.md, "Export and import"), over real HTTP
on both engines: a round-trip property over random trees with attachments (the bytes
downloaded after the import equal the uploaded ones), a file larger than a store chunk
(its base64 written in pieces), version 1 files, tampered files and quotas that leave no
row and no stored file behind, the Markdown list, and an edit that keeps (or replaces) the
edited message's attachments."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.storage import attachments, importing
from server.storage.attachment_blobs import CHUNK_BYTES
from server.storage.attachments import BLOBS
from server.storage.import_attachments import ImportedFiles
from server.storage.tables import Attachment, Conversation, Message, MessageAttachment
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live
from tests.live_clients import WsPeer, chat, read_ndjson
from tests.server.routes.test_export_import import (
    canonical,
    export,
    export_one,
    post_import,
    small_file,
    store_tree,
    trees,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_FILE = 2 << 20  # CERO_ATTACHMENT_MAX_BYTES here
QUOTA = 3 << 20  # CERO_ATTACHMENT_QUOTA_BYTES here
MAX_FILES = 12  # CERO_ATTACHMENT_MAX_FILES here


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {
        "attachment_max_bytes": MAX_FILE,
        "attachment_quota_bytes": QUOTA,
        "attachment_max_files": MAX_FILES,
        "max_import_bytes": 8 << 20,
    }


# -- helpers ---------------------------------------------------------------------------------


def text_file(size: int = 200) -> bytes:
    """Text no other test uploads (its hash is new to the store)."""
    return (secrets.token_hex(size // 2 + 1) + "\n").encode()[:size]


async def upload(live: Live, token: str, data: bytes, name: str = "notes.txt") -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as http,
        http.post(live.url + "/api/attachments", data=form, headers=bearer(token)) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, body
        attachment: dict[str, Any] = body["attachment"]
        return attachment


async def download(live: Live, token: str, attachment_id: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{live.url}/api/attachments/{attachment_id}", headers=bearer(token)) as resp,
    ):
        return resp.status, await resp.read()


async def stored(live: Live, sha256: str) -> bool:
    return await live.app[BLOBS].has(sha256)


async def nothing_left(live: Live, user_id: str, hashes: list[str]) -> None:
    """No conversation, no attachment row, and none of ``hashes`` kept by the store."""
    assert await Conversation.count().where(Conversation.user_id == user_id) == 0
    assert await Attachment.count().where(Attachment.user_id == user_id) == 0
    for sha256 in hashes:
        assert not await stored(live, sha256), sha256


def with_files(file: dict[str, Any], *where: tuple[int, int, bytes]) -> list[str]:
    """Attach ``data`` to message ``j`` of conversation ``i`` (a user message) of a
    version 2 ``file``; their hashes."""
    file["version"] = 2
    hashes = []
    for i, j, data in where:
        message = file["conversations"][i]["messages"][j]
        assert message["role"] == "user"
        sha256 = hashlib.sha256(data).hexdigest()
        message.setdefault("attachments", []).append(
            {
                "id": f"f{i}.{j}.{len(message['attachments'])}",
                "name": "notes.txt",
                "mimeType": "text/plain",
                "size": len(data),
                "sha256": sha256,
                "data": base64.b64encode(data).decode(),
            }
        )
        hashes.append(sha256)
    return hashes


def without_files(conversation: dict[str, Any]) -> dict[str, Any]:
    messages = [
        {k: v for k, v in m.items() if k != "attachments"} for m in conversation["messages"]
    ]
    return {**conversation, "messages": messages}


def canonical_files(conversation: dict[str, Any]) -> list[list[tuple[Any, ...]]]:
    """Each message's attachments with their ids as first-appearance positions."""
    seen: dict[str, int] = {}
    out = []
    for message in conversation["messages"]:
        row = []
        for a in message.get("attachments", ()):
            position = seen.setdefault(a["id"], len(seen))
            row.append((position, a["name"], a["mimeType"], a["size"], a["sha256"], a.get("data")))
        out.append(row)
    return out


# -- the round trip --------------------------------------------------------------------------


@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees(), picks=st.lists(st.lists(st.integers(0, 2), max_size=3), max_size=12))
async def test_round_trip_with_attachments(
    live: Live, tree: dict[str, Any], picks: list[list[int]]
) -> None:
    """Random tree, its user messages carrying some of three uploaded files (one possibly
    on several messages, as after an edit) → export → import → export: the same tree and
    attachments but for the ids, and every imported attachment downloads as uploaded."""
    token, user_id = await make_user_session("Round trip")
    conversation_id = await store_tree(user_id, tree)
    files = [text_file(100 + 37 * k) for k in range(3)]
    uploaded = [await upload(live, token, data, f"file {k}.txt") for k, data in enumerate(files)]
    rows = await (
        Message.select(Message.id)
        .where((Message.conversation_id == conversation_id) & (Message.role == "user"))
        .order_by(Message.created_at)
    )
    refs = {a["id"]: a for a in uploaded}
    for row, pick in zip(rows, picks, strict=False):
        chosen = list(dict.fromkeys(uploaded[k]["id"] for k in pick))
        await attachments.link(
            str(row["id"]),
            conversation_id,
            [attachments.ref({**refs[a], "mime_type": refs[a]["mimeType"]}) for a in chosen],
        )
    first = await export_one(live, token, conversation_id)
    assert first["version"] == 2
    (exported,) = first["conversations"]
    by_hash = {hashlib.sha256(d).hexdigest(): d for d in files}
    for message in exported["messages"]:
        for a in message.get("attachments", ()):
            if "data" in a:
                assert base64.b64decode(a["data"]) == by_hash[a["sha256"]]
    status, answer = await post_import(live, token, orjson.dumps(first))
    assert status == 200, answer
    (made,) = answer["conversations"]
    second = await export_one(live, token, made["id"])
    (again,) = second["conversations"]
    assert without_files(canonical(again)) == without_files(canonical(exported))
    assert canonical_files(again) == canonical_files(exported)
    old_ids = {a["id"] for m in exported["messages"] for a in m.get("attachments", ())}
    for message in again["messages"]:
        for a in message.get("attachments", ()):
            assert a["id"] not in old_ids
            assert await download(live, token, a["id"]) == (200, by_hash[a["sha256"]])


async def test_a_file_larger_than_a_store_chunk(live: Live) -> None:
    """A file of more than one store chunk, not a multiple of 3 bytes: its base64 is
    written in pieces that join into the one encoding, and it comes back whole."""
    token, user_id = await make_user_session("Large")
    data = text_file(CHUNK_BYTES + CHUNK_BYTES // 2 + 1)
    file = small_file(conversations=1, answers=1)
    (sha256,) = with_files(file, (0, 0, data))
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 200, answer
    (made,) = answer["conversations"]
    status, _, body = await export(live, token, f"/api/conversations/{made['id']}/export")
    assert status == 200
    (conversation,) = orjson.loads(body)["conversations"]
    (attachment,) = conversation["messages"][0]["attachments"]
    assert attachment["sha256"] == sha256 and attachment["size"] == len(data)
    assert base64.b64decode(attachment["data"], validate=True) == data
    assert await download(live, token, attachment["id"]) == (200, data)
    assert await Attachment.count().where(Attachment.user_id == user_id) == 1


async def test_a_version_1_file_still_imports(live: Live) -> None:
    token, user_id = await make_user_session("Version 1")
    file = small_file()
    assert file["version"] == 1
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 200, answer
    assert len(answer["conversations"]) == 2
    assert await Attachment.count().where(Attachment.user_id == user_id) == 0
    again = await export_one(live, token, answer["conversations"][0]["id"])
    assert again["version"] == 2
    assert all("attachments" not in m for m in again["conversations"][0]["messages"])


# -- refusals: nothing left behind -----------------------------------------------------------


def _bytes(data: bytes) -> dict[str, Any]:
    """An attachment's fields for ``data``, consistent with each other."""
    sha256 = hashlib.sha256(data).hexdigest()
    return {"data": base64.b64encode(data).decode(), "size": len(data), "sha256": sha256}


def _flip(text: str) -> str:
    return ("B" if text[0] == "A" else "A") + text[1:]


@pytest.mark.parametrize(
    ("spoil", "code", "field"),
    [
        (lambda a: a.update(sha256=hashlib.sha256(b"other").hexdigest()), 400, "sha256"),
        (lambda a: a.update(data=_flip(a["data"])), 400, "sha256"),  # base64 of other bytes
        (lambda a: a.update(data="!" + a["data"][1:]), 400, "data"),
        (lambda a: a.update(data=a["data"][:-4]), 400, "size"),
        (lambda a: a.update(data=a["data"] + "="), 400, "data"),
        (lambda a: a.pop("data"), 400, "data"),
        (lambda a: a.update(sha256="NOT-A-HASH"), 400, "sha256"),
        (lambda a: a.update(_bytes(b"\x00\x01\x02")), 400, "data"),  # not an accepted type
    ],
)
async def test_a_tampered_attachment_imports_nothing(
    live: Live, spoil: Any, code: int, field: str
) -> None:
    """The first conversation's file is fine (and stored before the second is checked);
    the second conversation's is spoiled: 400 naming it, no rows, no file kept."""
    token, user_id = await make_user_session("Tampered")
    file = small_file()
    hashes = with_files(file, (0, 2, text_file()), (1, 2, text_file()))
    bad = file["conversations"][1]["messages"][2]["attachments"][0]
    spoil(bad)
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == code, answer
    path = f"conversations[1].messages[2].attachments[0].{field}"
    assert answer["code"] == "invalid_import" and answer["field"] == path, answer
    assert answer["error"].startswith(path + ": ")
    await nothing_left(live, user_id, hashes)


async def test_an_attachment_on_an_answer_is_refused(live: Live) -> None:
    token, user_id = await make_user_session("On an answer")
    file = small_file()
    hashes = with_files(file, (0, 0, text_file()))
    answer_message = file["conversations"][0]["messages"][1]
    answer_message["attachments"] = file["conversations"][0]["messages"][0].pop("attachments")
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 400 and answer["field"] == "conversations[0].messages[1].attachments"
    await nothing_left(live, user_id, hashes)


async def test_limits_and_quota(live: Live) -> None:
    """Past one file's limit, the user's bytes or the user's count: 413 naming the limit,
    nothing kept; what the user had before counts."""
    token, user_id = await make_user_session("Quota")
    big = small_file(conversations=1, answers=1)
    hashes = with_files(big, (0, 0, text_file(MAX_FILE + 1)))
    status, answer = await post_import(live, token, orjson.dumps(big))
    assert (status, answer["code"]) == (413, "payload_too_large"), answer
    assert answer["limit"] == MAX_FILE and "CERO_ATTACHMENT_MAX_BYTES" in answer["error"]
    assert answer["field"] == "conversations[0].messages[0].attachments[0].size"
    await nothing_left(live, user_id, hashes)

    over = small_file(conversations=2, answers=1)
    hashes = with_files(over, (0, 0, text_file(MAX_FILE)), (1, 0, text_file(QUOTA - MAX_FILE)))
    kept = await upload(live, token, text_file(10))  # takes the import past the quota
    status, answer = await post_import(live, token, orjson.dumps(over))
    assert (status, answer["code"]) == (413, "quota_exceeded"), answer
    assert answer["limit"] == QUOTA and "CERO_ATTACHMENT_QUOTA_BYTES" in answer["error"]
    assert answer["field"] == "conversations[1].messages[0].attachments[0]"
    assert await Conversation.count().where(Conversation.user_id == user_id) == 0
    assert [r["id"] for r in await Attachment.select(Attachment.id)
            .where(Attachment.user_id == user_id)] == [kept["id"]]  # fmt: skip
    for sha256 in hashes:
        assert not await stored(live, sha256)

    many = small_file(conversations=1, answers=MAX_FILES // 2 + 1)
    hashes = with_files(many, *((0, 2 * k, text_file(20)) for k in range(MAX_FILES // 2 + 1)))
    many["conversations"][0]["messages"][0]["attachments"] += [
        {**a, "id": f"more{k}", "data": base64.b64encode(d).decode(), "sha256": s, "size": 20}
        for k, (a, d, s) in enumerate(
            (a, d, hashlib.sha256(d).hexdigest())
            for a, d in (
                (many["conversations"][0]["messages"][0]["attachments"][0], text_file(20))
                for _ in range(MAX_FILES // 2)
            )
        )
    ]
    status, answer = await post_import(live, token, orjson.dumps(many))
    assert (status, answer["code"]) == (413, "quota_exceeded"), answer
    assert answer["limit"] == MAX_FILES and "CERO_ATTACHMENT_MAX_FILES" in answer["error"]
    for sha256 in hashes:
        assert not await stored(live, sha256)


# -- Markdown and edit -----------------------------------------------------------------------


async def test_markdown_lists_attachments(live: Live) -> None:
    token, _ = await make_user_session("Markdown")
    file = small_file(conversations=1, answers=1)
    with_files(file, (0, 0, text_file(123)))
    file["conversations"][0]["messages"][0]["attachments"][0]["name"] = "my *notes*.txt"
    status, answer = await post_import(live, token, orjson.dumps(file))
    assert status == 200, answer
    (made,) = answer["conversations"]
    status, _, body = await export(
        live, token, f"/api/conversations/{made['id']}/export", "markdown"
    )
    assert status == 200
    text = body.decode()
    assert "- *Attached:* my \\*notes\\*.txt (text/plain, 123 bytes)" in text
    assert text.index("question 0") < text.index("*Attached:*") < text.index("answer 0")


async def _edit(live: Live, token: str, cid: str, mid: str, body: dict[str, Any]) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/conversations/{cid}/messages/{mid}/edit",
            json=body,
            headers=bearer(token),
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await read_ndjson(resp)


async def _messages(live: Live, token: str, cid: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{live.url}/api/conversations/{cid}/messages", headers=bearer(token)) as resp,
    ):
        body = await resp.json()
        messages: list[dict[str, Any]] = body["messages"]
        return messages


async def test_an_edit_keeps_the_attachments(live: Live) -> None:
    """An edit without ``attachments`` keeps the edited message's (the model gets them
    again); with ``attachments`` those replace them (``[]``: none)."""
    token, _ = await make_user_session("Edit")
    first = await upload(live, token, text_file(50), "a.txt")
    second = await upload(live, token, text_file(60), "b.txt")
    async with aiohttp.ClientSession() as http:
        lines = await chat(
            http, live.url, token, message="read it", aiModel="demo", attachments=[first["id"]]
        )
    cid = lines[0]["data"]["conversationId"]
    user_id = lines[0]["data"]["userMessageId"]
    lines = await _edit(live, token, cid, user_id, {"message": "read it again"})
    assert "a.txt" in lines[-1]["data"]["fullText"]  # the demo model names what it got
    (user, _answer) = await _messages(live, token, cid)
    assert user["content"] == "read it again" and user["id"] != user_id
    assert [a["id"] for a in user["attachments"]] == [first["id"]]

    both = {"message": "both", "attachments": [second["id"], first["id"]]}
    await _edit(live, token, cid, user["id"], both)
    (user, _answer) = await _messages(live, token, cid)
    assert [a["id"] for a in user["attachments"]] == [second["id"], first["id"]]

    await _edit(live, token, cid, user["id"], {"message": "none", "attachments": []})
    (user, _answer) = await _messages(live, token, cid)
    assert "attachments" not in user

    # The export carries each file's bytes once, however many messages name it.
    (conversation,) = (await export_one(live, token, cid))["conversations"]
    named = [a for m in conversation["messages"] for a in m.get("attachments", ())]
    assert len(named) == 4 and sum("data" in a for a in named) == 2
    links = await MessageAttachment.count().where(MessageAttachment.attachment_id == first["id"])
    assert links == 3


async def test_a_websocket_edit_keeps_the_attachments(live: Live) -> None:
    token, _ = await make_user_session("WS edit")
    kept = await upload(live, token, text_file(70), "kept.txt")
    async with aiohttp.ClientSession() as http:
        peer = WsPeer(await http.ws_connect(f"{live.url}/api/ws?token={token}")).start()
        await peer.send(type="send", message="look", aiModel="demo", attachments=[kept["id"]])
        ack = await peer.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "send")
        cid, user_id = ack["conversationId"], ack["userMessageId"]
        await peer.wait_for(lambda f: f.get("type") == "done")
        await peer.send(type="edit", conversationId=cid, messageId=user_id, message="look again")
        ack = await peer.wait_for(lambda f: f.get("type") == "ack" and f["of"] == "edit")
        done = await peer.wait_for(
            lambda f: f.get("type") == "done" and f.get("generationId") == ack["generationId"]
        )
        assert "kept.txt" in done["fullText"]
        await peer.ws.close()
    (user, _answer) = await _messages(live, token, cid)
    assert user["id"] == ack["userMessageId"]
    assert [a["id"] for a in user["attachments"]] == [kept["id"]]


async def test_a_write_that_fails_after_the_files_were_stored_keeps_nothing(live: Live) -> None:
    """The route's steps, the database refusing the rows (a message id that exists) after
    every file was stored: the transaction takes the rows back, the files are discarded."""
    _token, user_id = await make_user_session("Halfway files")
    file = small_file()
    hashes = with_files(file, (0, 0, text_file()), (1, 2, text_file()))
    checked = importing.check(file, importing.ImportLimits(10, 100, MAX_FILE))
    files = ImportedFiles(live.app[BLOBS], live.settings.attachment_types)
    await files.store_all(importing.new_files(checked))
    assert [await stored(live, h) for h in hashes] == [True, True]
    planned = importing.plan(checked, user_id, datetime.now(UTC), files.stored)
    assert len(planned.attachments) == 2 and len(planned.links) == 2
    existing = await store_tree(
        user_id,
        {
            "title": "t",
            "messages": [{"role": "user", "parent": None, "content": "x", "status": "complete"}],
            "leaf": 0,
        },
    )
    (taken,) = await Message.select(Message.id).where(Message.conversation_id == existing).run()
    planned.messages[-1].id = taken["id"]
    with pytest.raises(Exception):  # noqa: B017 - whichever driver's integrity error
        await importing.write_import(planned)
    await files.discard()
    assert await Conversation.count().where(Conversation.user_id == user_id) == 1  # the one above
    assert await Attachment.count().where(Attachment.user_id == user_id) == 0
    assert [await stored(live, h) for h in hashes] == [False, False]
