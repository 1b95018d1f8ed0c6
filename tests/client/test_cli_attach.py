"""``cero chat --attach FILE`` against the live app, on both engines: files uploaded, then
named in the send (the demo model acknowledges them, the stored user message lists them);
a refused upload is one line naming the file and the limit, and nothing is sent; a file
the CLI cannot read is a usage error before anything is uploaded."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from server.storage.tables import Attachment
from tests.auth_helpers import make_user_session
from tests.client.cli_harness import (
    Cli,
    messages,
    one_error_line,
    only_conversation,
    rest,
    terminal,
)
from tests.conftest import Live

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

#: CERO_ATTACHMENT_MAX_BYTES of this module's server.
MAX_BYTES = 64 << 10


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    return {"attachment_max_bytes": MAX_BYTES}


@pytest_asyncio.fixture(loop_scope="module")
async def cli(live: Live, tmp_path: Path) -> AsyncIterator[Cli]:
    async with terminal(live, tmp_path / "home") as running:
        yield running


async def sign_in(cli: Cli, name: str) -> tuple[str, str]:
    token, user_id = await make_user_session(name)
    cli.save_token(token, name)
    return token, user_id


def png_file(path: Path) -> Path:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path


async def conversations(live: Live, token: str) -> list[dict[str, Any]]:
    _, page = await rest(live, token, "GET", "/api/conversations")
    return list(page["conversations"])


async def test_a_text_file_and_a_png_go_with_the_message(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    token, _ = await sign_in(cli, "Ada")
    notes = tmp_path / "notes.txt"
    notes.write_text("Oak, ash and thorn.\n")
    chart = png_file(tmp_path / "chart.png")
    code, out, err = await cli.run(
        "chat", "what are these?", "-m", "demo", "--attach", str(notes), "-a", str(chart)
    )
    assert code == 0, err
    assert "You attached 2 files:" in out
    assert f"notes.txt (text/plain, {notes.stat().st_size} bytes)" in out
    assert f"chart.png (image/png, {chart.stat().st_size} bytes)" in out
    conversation = await only_conversation(live, token)
    user = (await messages(live, token, conversation))[0]
    assert user["role"] == "user" and user["content"] == "what are these?"
    assert [(a["name"], a["mimeType"], a["size"]) for a in user["attachments"]] == [
        ("notes.txt", "text/plain", notes.stat().st_size),
        ("chart.png", "image/png", chart.stat().st_size),
    ]


async def test_attach_in_a_continued_conversation(cli: Cli, live: Live, tmp_path: Path) -> None:
    token, _ = await sign_in(cli, "Ada")
    code, _, err = await cli.run("chat", "hello", "-m", "demo")
    assert code == 0, err
    conversation = await only_conversation(live, token)
    chart = png_file(tmp_path / "later.png")
    code, out, err = await cli.run("chat", "-c", conversation, "and this?", "-a", str(chart))
    assert code == 0, err
    assert "You attached 1 file: later.png (image/png" in out
    user = (await messages(live, token, conversation))[2]
    assert [a["name"] for a in user["attachments"]] == ["later.png"]


async def test_an_oversize_file_is_one_line_and_nothing_is_sent(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    token, user_id = await sign_in(cli, "Ada")
    small = tmp_path / "small.txt"
    small.write_text("fits\n")
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (MAX_BYTES + 1) + b"\n")
    code, out, err = await cli.run(
        "chat", "read it", "-m", "demo", "-a", str(small), "-a", str(big)
    )
    assert code == 1, err
    line = one_error_line(err)
    assert f"cannot attach {big}:" in line
    assert f"limit of 64.0 KiB ({MAX_BYTES} bytes) per file (payload_too_large)" in line
    assert out == ""
    assert await conversations(live, token) == []
    # The file that fit was uploaded, never sent (the server's sweep removes it in a day).
    rows = await Attachment.select(Attachment.name).where(Attachment.user_id == user_id)
    assert [r["name"] for r in rows] == ["small.txt"]


async def test_a_type_the_server_refuses_names_the_file(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    token, _ = await sign_in(cli, "Ada")
    blob = tmp_path / "random.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    code, out, err = await cli.run("chat", "what is it?", "-a", str(blob))
    assert code == 1, err
    line = one_error_line(err)
    assert f"cannot attach {blob}: the content is neither a known format" in line
    assert "(unsupported_media_type)" in line and out == ""
    assert await conversations(live, token) == []


async def test_a_missing_file_is_a_usage_error_before_any_upload(
    cli: Cli, live: Live, tmp_path: Path
) -> None:
    token, user_id = await sign_in(cli, "Ada")
    good = png_file(tmp_path / "good.png")
    missing = tmp_path / "missing.txt"
    code, out, err = await cli.run("chat", "hi", "-a", str(good), "-a", str(missing))
    assert code == 2 and out == ""
    assert one_error_line(err) == f"cero: error: cannot attach {missing}: No such file or directory"
    code, _, err = await cli.run("chat", "hi", "-a", str(tmp_path))
    assert code == 2
    assert one_error_line(err) == f"cero: error: cannot attach {tmp_path}: Is a directory"
    assert await Attachment.count().where(Attachment.user_id == user_id) == 0
    assert await conversations(live, token) == []


async def test_attach_is_not_for_the_interactive_mode_nor_more_than_ten(
    cli: Cli, tmp_path: Path
) -> None:
    await sign_in(cli, "Ada")
    one = png_file(tmp_path / "one.png")
    code, _, err = await cli.run("chat", "-i", "-a", str(one))
    assert code == 2 and "--attach goes with one message" in one_error_line(err)
    code, _, err = await cli.run("chat", "hi", *[f"-a{one}"] * 11)
    assert code == 2 and "at most 10 files with --attach" in one_error_line(err)
