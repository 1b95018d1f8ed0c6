"""``cero chat --attach``'s parts without a server: the one-line refusals (the file, the
limit) and the progress line drawn from the bytes aiohttp has read of the file."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from client.attach import CountingReader, LocalFile, _progress, refusal, size_text
from client.output import Output


def test_refusal_lines() -> None:
    local = LocalFile(Path("/tmp/big.txt"), 30 << 20)
    body = (
        b'{"error":"file: larger than 20971520 bytes (CERO_ATTACHMENT_MAX_BYTES)",'
        b'"code":"payload_too_large","field":"file","limit":20971520}'
    )
    assert refusal(local, 413, body) == (
        "cannot attach /tmp/big.txt: 30.0 MiB (31457280 bytes) is over the server's limit "
        "of 20.0 MiB (20971520 bytes) per file (payload_too_large)"
    )
    quota = (
        b'{"error":"file: you keep 1000 attachments already, the most allowed '
        b'(CERO_ATTACHMENT_MAX_FILES)","code":"quota_exceeded","limit":1000}'
    )
    assert refusal(local, 413, quota) == (
        "cannot attach /tmp/big.txt: you keep 1000 attachments already, the most allowed "
        "(CERO_ATTACHMENT_MAX_FILES) (quota_exceeded)"
    )
    assert refusal(local, 502, b"<html>") == (
        "cannot attach /tmp/big.txt: the server answered HTTP 502"
    )
    assert size_text(512) == "512 bytes"
    assert size_text(3 << 30) == "3.0 GiB (3221225472 bytes)"


def test_the_progress_line_counts_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "song\x1b]0;x\x07.mp3"
    path.write_bytes(b"\x00" * (2 << 20))
    reader = CountingReader(io.FileIO(path, "rb"))
    reader.read(1 << 20)
    err = io.StringIO()
    local = LocalFile(path, 2 << 20)

    async def draw() -> None:
        task = asyncio.get_running_loop().create_task(
            _progress(Output(io.BytesIO(), err), local, reader)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(draw())
    reader.close()
    text = err.getvalue()
    assert "uploading song" in text and "1.0 of 2.0 MiB  50%" in text
    assert "\x07" not in text and "]0;" not in text  # the name's escape sequence filtered
    assert text.endswith("\r\x1b[K")  # the line cleared at the end
