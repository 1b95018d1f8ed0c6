"""Attachments through the whole server (docs/api.md, Attachments), on both engines (and
in cluster mode with ``CERO_TEST_CLUSTER_REDIS_URL``: the PostgreSQL store): upload and
download, owner-only answers, hostile files, limits, an upload cut short, sending them
(the Gemini stand-in checks the parts it receives, inline and through the Files API), the
demo model's acknowledgement, the TOON history naming them, and their removal with the
conversation."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image

from server.core.config import ConfigError, load_settings
from server.storage.attachment_types import clean_name
from server.storage.attachments import BLOBS, sweep
from server.storage.tables import Attachment, AttachmentChunk, MessageAttachment
from standins.gemini import FakeGemini, Script
from tests import live_clients
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "gemini-2.5-flash-lite"
MAX_BYTES = 256 << 10  # CERO_ATTACHMENT_MAX_BYTES here
QUOTA = 1 << 20  # CERO_ATTACHMENT_QUOTA_BYTES here
INLINE_MAX = 2048  # CERO_GEMINI_INLINE_MAX_BYTES here: larger files go through Files API


def png(width: int = 32, height: int = 24, *, exif: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (10, 200, 30))
    out = io.BytesIO()
    if exif:
        info = Image.Exif()
        info[0x010F] = "SecretCamera"  # Make
        image.save(out, format="JPEG", exif=info.tobytes())
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small PNG whose header declares ``width × height`` pixels (decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    row = b"\x00" + b"\x00" * width
    body = zlib.compress(row * 64, 9)  # only the first rows: the rest "missing"
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
GIF_JS = b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(document.domain);//" + b"\x00;" * 4
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@dataclass
class Env:
    live: Live
    fake: FakeGemini
    http: aiohttp.ClientSession
    token: str

    async def upload(
        self,
        data: bytes,
        name: str = "f.bin",
        content_type: str = "application/octet-stream",
        token: str | None = None,
    ) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=content_type)
        async with self.http.post(
            self.live.url + "/api/attachments", data=form, headers=bearer(token or self.token)
        ) as resp:
            return resp.status, await resp.json()

    async def upload_raw(self, data: bytes, disposition: str) -> tuple[int, Any]:
        """An upload whose part header is written here (``disposition``: how it names
        the file), as no well-behaved client would write it."""
        boundary = "rawboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        async with self.http.post(
            self.live.url + "/api/attachments",
            data=body,
            headers={
                **bearer(self.token),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        ) as resp:
            return resp.status, await resp.json()

    async def uploaded(self, data: bytes, name: str, token: str | None = None) -> dict[str, Any]:
        status, body = await self.upload(data, name, token=token)
        assert status == 201, body
        attachment: dict[str, Any] = body["attachment"]
        return attachment

    async def get(self, path: str, token: str | None = None) -> aiohttp.ClientResponse:
        resp = await self.http.get(self.live.url + path, headers=bearer(token or self.token))
        await resp.read()
        return resp


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with live_with_gemini(
        database_url,
        attachment_max_bytes=MAX_BYTES,
        attachment_quota_bytes=QUOTA,
        gemini_inline_max_bytes=INLINE_MAX,
    ) as (live, fake):
        token, _ = await make_user_session("Ada")
        async with aiohttp.ClientSession() as http:
            yield Env(live, fake, http, token)


def on_files(env: Env) -> bool:
    return env.live.settings.attachment_backend == "files"


async def test_round_trip_image_and_text(env: Env) -> None:
    image = png()
    attachment = await env.uploaded(image, "cat.png")
    assert attachment["name"] == "cat.png" and attachment["mimeType"] == "image/png"
    assert attachment["size"] == len(image)
    assert len(attachment["sha256"]) == 64 and attachment["createdAt"].endswith("Z")
    resp = await env.get(f"/api/attachments/{attachment['id']}")
    assert resp.status == 200
    assert await resp.read() == image
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert resp.headers["Content-Disposition"].startswith("inline;")

    notes = "# Notes\n\nÜnïcode text, `code`.\n".encode()
    text = await env.uploaded(notes, "notes.md")
    assert text["mimeType"] == "text/markdown"
    resp = await env.get(f"/api/attachments/{text['id']}")
    assert await resp.read() == notes
    assert resp.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    code = await env.uploaded(b"def f():\n    return 1\n", "f.py")
    assert code["mimeType"] == "text/plain"


async def test_files_are_private_and_named_by_their_hash(env: Env) -> None:
    if not on_files(env):
        pytest.skip("the database store (cluster mode) keeps no files")
    data = png(7, 7)
    attachment = await env.uploaded(data, "../../etc/passwd")
    folder = env.live.settings.attachment_dir
    path = folder / attachment["sha256"]
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not [n for n in os.listdir(folder) if n.startswith(".upload-")]


async def test_only_the_owner_sees_it(env: Env) -> None:
    attachment = await env.uploaded(png(), "mine.png")
    other, _ = await make_user_session("Eve")
    for path in (
        f"/api/attachments/{attachment['id']}",
        f"/api/attachments/{attachment['id']}/thumbnail",
    ):
        theirs = await env.get(path, other)
        missing = await env.get(path.replace(attachment["id"], "nope" * 6), other)
        assert theirs.status == missing.status == 404
        assert await theirs.json() == await missing.json()
    async with env.http.get(env.live.url + f"/api/attachments/{attachment['id']}") as resp:
        assert resp.status == 401


async def test_hostile_files(env: Env) -> None:
    # A GIF that is also JavaScript: stored and served as the image it claims to be, with
    # nosniff and a sandbox, so it can never run as a script.
    gif = await env.uploaded(GIF_JS, "x.js")
    assert gif["mimeType"] == "image/gif"
    resp = await env.get(f"/api/attachments/{gif['id']}")
    assert resp.headers["Content-Type"] == "image/gif"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    # SVG with a script: text, never an image; a download, never rendered.
    svg = await env.uploaded(SVG, "pic.svg")
    assert svg["mimeType"] == "text/plain"
    resp = await env.get(f"/api/attachments/{svg['id']}")
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    thumb = await env.get(f"/api/attachments/{svg['id']}/thumbnail")
    assert thumb.status == 415
    # A PDF named and declared as an image is a PDF.
    status, body = await env.upload(PDF, "photo.png", "image/png")
    assert status == 201 and body["attachment"]["mimeType"] == "application/pdf"
    resp = await env.get(f"/api/attachments/{body['attachment']['id']}")
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    # Names: no path, no control characters; the download's header stays one line.
    hostile = "..\\..\\evil/\x1b[31mre\u202eport\r\n.txt"
    status, body = await env.upload_raw(
        b"hello\n", f"filename*=UTF-8''{urllib.parse.quote(hostile, safe='')}"
    )
    assert status == 201, body
    named = body["attachment"]
    assert named["name"] == "[31mreport.txt"
    resp = await env.get(f"/api/attachments/{named['id']}")
    assert "\r" not in resp.headers["Content-Disposition"]
    assert (await env.uploaded(b"x", "..."))["name"] == "file"
    # Neither a known format nor text: refused by content, whatever the name says.
    status, body = await env.upload(os.urandom(4096) + b"\x00", "notes.txt", "text/plain")
    assert status == 415 and body["code"] == "unsupported_media_type", body
    zipped = b"PK\x03\x04" + b"\x00" * 200
    status, body = await env.upload(zipped, "a.png", "image/png")
    assert status == 415 and "application/zip" in body["error"], body


async def test_thumbnails_are_bounded_and_clean(env: Env) -> None:
    photo = await env.uploaded(png(1200, 800, exif=True), "photo.jpg")
    assert photo["mimeType"] == "image/jpeg"
    original = await env.get(f"/api/attachments/{photo['id']}")
    assert b"SecretCamera" in await original.read()
    thumb = await env.get(f"/api/attachments/{photo['id']}/thumbnail")
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    body = await thumb.read()
    assert b"SecretCamera" not in body
    image = Image.open(io.BytesIO(body))
    assert max(image.size) <= 256 and image.size == (256, 171)
    assert not image.getexif()
    # A small file declaring 3.6 billion pixels: accepted as a PNG, never decoded.
    bomb = await env.uploaded(bomb_png(), "bomb.png")
    assert bomb["mimeType"] == "image/png" and bomb["size"] < 10_000
    thumb = await env.get(f"/api/attachments/{bomb['id']}/thumbnail")
    assert thumb.status == 422
    assert (await thumb.json())["code"] == "unprocessable_image"


async def test_limits_name_themselves(env: Env) -> None:
    token, _ = await make_user_session("Quota")
    status, body = await env.upload(b"a" * (MAX_BYTES + 1), "big.txt", token=token)
    assert status == 413 and body["code"] == "payload_too_large", body
    assert body["limit"] == MAX_BYTES and "CERO_ATTACHMENT_MAX_BYTES" in body["error"]
    # Past the body limit (a file and its framing): refused from Content-Length, unread.
    status, body = await env.upload(b"a" * (MAX_BYTES + 100_000), "huge.txt", token=token)
    assert status == 413 and body["limit"] == MAX_BYTES, body
    status, body = await env.upload(b"", "empty.txt", token=token)
    assert status == 400 and body["field"] == "file", body
    for i in range(QUOTA // MAX_BYTES):
        await env.uploaded(bytes([65 + i]) * MAX_BYTES, f"part{i}.txt", token=token)
    status, body = await env.upload(b"z" * 10, "one-more.txt", token=token)
    assert status == 413 and body["code"] == "quota_exceeded", body
    assert body["limit"] == QUOTA and "CERO_ATTACHMENT_QUOTA_BYTES" in body["error"]
    async with env.http.post(
        env.live.url + "/api/attachments", json={"file": "x"}, headers=bearer(env.token)
    ) as resp:
        assert resp.status == 415 and (await resp.json())["code"] == "unsupported_media_type"
    form = aiohttp.FormData()
    form.add_field("other", b"data", filename="x.txt")
    async with env.http.post(
        env.live.url + "/api/attachments", data=form, headers=bearer(env.token)
    ) as resp:
        assert resp.status == 400 and "file" in (await resp.json())["error"]


async def test_an_upload_cut_short_leaves_nothing(env: Env) -> None:
    token, user_id = await make_user_session("Cut")
    boundary = "cutcutcut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    total = len(head) + 100_000 + len(f"\r\n--{boundary}--\r\n")
    _reader, writer = await asyncio.open_connection("127.0.0.1", env.live.server.port)
    writer.write(
        (
            "POST /api/attachments HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {total}\r\n\r\n"
        ).encode()
        + head
        + b"a" * 40_000
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.5)
    assert await Attachment.count().where(Attachment.user_id == user_id) == 0
    if on_files(env):
        folder = env.live.settings.attachment_dir
        assert not [n for n in os.listdir(folder) if n.startswith(".upload-")]
    status, _ = await env.upload(b"a" * 1000, "after.txt", token=token)
    assert status == 201


async def _send(env: Env, ids: list[str], message: str, **body: Any) -> list[dict[str, Any]]:
    lines = await live_clients.chat(
        env.http, env.live.url, env.token, message=message, attachments=ids, **body
    )
    assert lines[-1]["topic"] == "done", lines[-1]
    return lines


async def test_gemini_receives_the_parts(env: Env) -> None:
    small = png(8, 8)
    large = b"# big\n" + b"word " * 1000  # past INLINE_MAX: through the Files API
    a = await env.uploaded(small, "small.png")
    b = await env.uploaded(large, "big.md")
    env.fake.enqueue(Script(chunks=["seen"]))
    lines = await _send(env, [a["id"], b["id"]], "what are these?", aiModel=MODEL)
    request = env.fake.stream_requests()[-1].body
    last = request["contents"][-1]
    assert last["parts"][0] == {"text": "what are these?"}
    assert last["parts"][1]["inlineData"]["mime_type"] == "image/png"  # the SDK's spelling
    assert "fileData" in last["parts"][2]
    received = env.fake.files.received(request)
    assert [(p.mime_type, p.data, p.how) for p in received] == [
        ("image/png", small, "inline"),
        ("text/markdown", large, "file"),
    ]
    # The messages show them on the user message.
    conversation_id = lines[0]["data"]["conversationId"]
    resp = await env.get(f"/api/conversations/{conversation_id}/messages")
    messages = (await resp.json())["messages"]
    assert messages[0]["attachments"] == [
        {"id": a["id"], "name": "small.png", "mimeType": "image/png", "size": len(small)},
        {"id": b["id"], "name": "big.md", "mimeType": "text/markdown", "size": len(large)},
    ]
    assert "attachments" not in messages[1]
    # Later turns still send them (the verbatim tail), the Files API upload once.
    uploads = len(env.fake.files.files)
    env.fake.enqueue(Script(chunks=["again"]))
    await _send(env, [], "and now?", aiModel=MODEL, conversationId=conversation_id)
    request = env.fake.stream_requests()[-1].body
    assert len(env.fake.files.received(request)) == 2
    assert len(env.fake.files.files) == uploads
    # Once out of the tail, the TOON block names them and their bytes are no longer sent.
    for i in range(3):
        env.fake.enqueue(Script(chunks=["ok"]))
        await _send(env, [], f"turn {i}", aiModel=MODEL, conversationId=conversation_id)
    request = env.fake.stream_requests()[-1].body
    system = request["systemInstruction"]["parts"][0]["text"]
    assert f"[attachment: small.png, image/png, {len(small)} bytes]" in system
    assert f"[attachment: big.md, text/markdown, {len(large)} bytes]" in system
    assert env.fake.files.received(request) == []


async def test_the_demo_model_acknowledges(env: Env) -> None:
    data = PDF
    a = await env.uploaded(data, "paper.pdf")
    lines = await _send(env, [a["id"]], "summarise", aiModel="demo")
    text = "".join(line["data"] for line in lines if line["topic"] == "token")
    assert f"You attached 1 file: paper.pdf (application/pdf, {len(data)} bytes)" in text


async def test_send_refuses_what_it_may_not_carry(env: Env) -> None:
    other, _ = await make_user_session("Mallory")
    theirs = await env.uploaded(b"secret\n", "s.txt", token=other)
    for ids in ([theirs["id"]], ["missing"]):
        status, lines = await live_clients.chat_result(
            env.http, env.live.url, env.token, message="hi", aiModel="demo", attachments=ids
        )
        assert status == 400 and lines[0]["field"] == "attachments", lines
    # Sent in one conversation, it is refused in another.
    mine = await env.uploaded(b"note\n", "n.txt")
    await _send(env, [mine["id"]], "first", aiModel="demo")
    status, lines = await live_clients.chat_result(
        env.http, env.live.url, env.token, message="hi", aiModel="demo", attachments=[mine["id"]]
    )
    assert status == 400 and "another conversation" in lines[0]["error"], lines


async def test_websocket_send_with_attachments(env: Env) -> None:
    a = await env.uploaded(b"ws text\n", "ws.txt")
    async with env.http.ws_connect(env.live.url + "/api/ws", headers=bearer(env.token)) as ws:
        peer = live_clients.WsPeer(ws).start()
        await peer.send(type="send", message="via ws", aiModel="demo", attachments=[a["id"]])
        message = await peer.wait_for(lambda f: f.get("type") == "message")
        assert message["message"]["attachments"] == [
            {"id": a["id"], "name": "ws.txt", "mimeType": "text/plain", "size": 8}
        ]
        done = await peer.wait_for(lambda f: f.get("type") == "done")
        tokens = live_clients.token_text(peer.frames, done["messageId"])
        assert "ws.txt (text/plain, 8 bytes)" in tokens
        await peer.close()


async def test_deleting_the_conversation_removes_them(env: Env) -> None:
    data = b"to be deleted " + os.urandom(16).hex().encode()
    a = await env.uploaded(data, "gone.txt")
    lines = await _send(env, [a["id"]], "keep this", aiModel="demo")
    conversation_id = lines[0]["data"]["conversationId"]
    assert await MessageAttachment.count().where(MessageAttachment.attachment_id == a["id"]) == 1
    async with env.http.delete(
        env.live.url + f"/api/conversations/{conversation_id}", headers=bearer(env.token)
    ) as resp:
        assert resp.status == 200
    assert await Attachment.count().where(Attachment.id == a["id"]) == 0
    assert await MessageAttachment.count().where(MessageAttachment.attachment_id == a["id"]) == 0
    assert (await env.get(f"/api/attachments/{a['id']}")).status == 404
    if on_files(env):
        assert not (env.live.settings.attachment_dir / a["sha256"]).exists()
    else:
        assert await AttachmentChunk.count().where(AttachmentChunk.sha256 == a["sha256"]) == 0


async def test_openapi_describes_the_upload(env: Env) -> None:
    async with env.http.get(env.live.url + "/openapi.json") as resp:
        spec = await resp.json()
    post = spec["paths"]["/api/attachments"]["post"]
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert "201" in post["responses"] and "413" in post["responses"]
    assert "/api/attachments/{id}/thumbnail" in spec["paths"]


async def test_the_sweep_removes_unsent_and_unnamed(env: Env) -> None:
    token, _ = await make_user_session("Sweep")
    data = b"never sent " + os.urandom(8).hex().encode()
    stale = await env.uploaded(data, "stale.txt", token=token)
    fresh = await env.uploaded(b"fresh " + os.urandom(8).hex().encode(), "fresh.txt", token=token)
    long_ago = datetime.now(UTC) - timedelta(hours=48)
    await (
        Attachment.update({Attachment.created_at: long_ago})
        .where(Attachment.id == stale["id"])
        .run()
    )
    blobs = env.live.app[BLOBS]
    # The bytes count as old enough to sweep once no row names them.
    if on_files(env):
        path = env.live.settings.attachment_dir / stale["sha256"]
        os.utime(path, (long_ago.timestamp(), long_ago.timestamp()))
    else:
        await (
            AttachmentChunk.update({AttachmentChunk.created_at: long_ago})
            .where(AttachmentChunk.sha256 == stale["sha256"])
            .run()
        )
    removed = await sweep(blobs, unsent_hours=24)
    assert removed[0] >= 1 and removed[1] >= 1, removed
    assert await Attachment.count().where(Attachment.id == stale["id"]) == 0
    assert (await env.get(f"/api/attachments/{fresh['id']}", token)).status == 200
    assert stale["sha256"] not in await blobs.stored(0)
    assert fresh["sha256"] in await blobs.stored(0)


async def test_settings_and_names() -> None:
    with pytest.raises(ConfigError, match="CERO_ATTACHMENT_TYPES"):
        load_settings(env_file=None, secret="s" * 32, attachment_types="image/svg+xml")
    with pytest.raises(ConfigError, match="CERO_ATTACHMENT_STORE"):
        load_settings(env_file=None, secret="s" * 32, attachment_store="database")
    settings = load_settings(
        env_file=None, secret="s" * 32, attachment_types="IMAGE/PNG, text/plain"
    )
    assert settings.attachment_types == ["image/png", "text/plain"]
    assert settings.attachment_backend == "files"
    assert clean_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert clean_name("..") == clean_name("") == clean_name(None) == "file"
    assert clean_name(".env") == "env"
    assert len(clean_name("x" * 1000)) == 255
