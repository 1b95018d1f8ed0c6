"""Attachments in the model request (docs/api.md, Attachments, "What the model gets"):
they go with their message while it is in the verbatim tail and count in the budget
there; in the TOON block they are named; a new message whose attachments alone do not fit
is refused; the demo model acknowledges them; the Gemini provider sends small ones
inline and large ones through the Files API (the stand-in checks both)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from actors.compression import decode_block
from actors.context import build_request, estimate_attachment_tokens, estimate_request_tokens
from actors.models.base import Attachment, ChatTurn, ModelError, ModelRequest, TextDelta
from actors.models.catalog import Catalog
from actors.models.demo import DemoProvider
from actors.models.gemini import GeminiProvider
from standins.gemini import FakeGemini, Script

FLASH = Catalog.load(gemini_enabled=True).resolve("gemini-2.5-flash-lite")
PNG = Attachment("a1", "chart.png", "image/png", 2_000)
NOTES = Attachment("a2", "notes.md", "text/markdown", 40_000)


def build(history: list[ChatTurn], **kwargs: object) -> ModelRequest:
    return asyncio.run(build_request(history=history, model=FLASH, **kwargs))  # type: ignore[arg-type]


def test_the_tail_carries_them_and_the_block_names_them() -> None:
    turns = [ChatTurn("user", "look", (PNG, NOTES)), ChatTurn("assistant", "I see")]
    for i in range(6):
        turns.append(ChatTurn("user" if i % 2 == 0 else "assistant", f"turn {i}"))
    turns.append(ChatTurn("user", "last", (PNG,)))
    request = build(turns)
    assert request.contents[-1].attachments == (PNG,)
    assert all(not t.attachments for t in request.contents[:-1])
    assert "[attachment: chart.png, image/png, 2000 bytes]" in request.system
    assert "[attachment: notes.md, text/markdown, 40000 bytes]" in request.system
    first = decode_block(request.system)[0]
    assert first.content.startswith("look\n[attachment: chart.png")


def test_they_count_in_the_budget() -> None:
    plain = build([ChatTurn("user", "hi")])
    with_files = build([ChatTurn("user", "hi", (PNG, NOTES))])
    extra = estimate_attachment_tokens(PNG) + estimate_attachment_tokens(NOTES)
    assert estimate_request_tokens(with_files) == estimate_request_tokens(plain) + extra
    assert estimate_attachment_tokens(NOTES) == 20_000  # text: a token for 2 bytes
    huge = Attachment("a3", "book.txt", "text/plain", 20_000_000)
    with pytest.raises(ModelError) as caught:
        build([ChatTurn("user", "read this", (huge,))])
    assert caught.value.code == "bad_request"


def test_the_demo_model_acknowledges_them() -> None:
    request = ModelRequest(
        model="demo",
        system="",
        contents=(ChatTurn("user", "what?", (PNG,)),),
        attachment_data={"a1": b"x" * 2_000},
    )

    async def answer() -> str:
        events = [e async for e in DemoProvider(0).stream(request)]
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    assert "You attached 1 file: chart.png (image/png, 2000 bytes)." in asyncio.run(answer())
    missing = replace(request, attachment_data={})
    assert "not received" in asyncio.run(_text(DemoProvider(0), missing))


async def _text(provider: DemoProvider, request: ModelRequest) -> str:
    return "".join([e.text async for e in provider.stream(request) if isinstance(e, TextDelta)])


async def test_gemini_inline_then_files_api() -> None:
    fake = FakeGemini()
    url = await fake.start()
    provider = GeminiProvider("k", base_url=url, inline_max_bytes=3_000)
    small, large = b"s" * 2_000, b"L" * 5_000
    request = ModelRequest(
        model=FLASH.id,
        system="sys",
        contents=(
            ChatTurn(
                "user",
                "two files",
                (
                    Attachment("s", "s.txt", "text/plain", len(small)),
                    Attachment("l", "l.txt", "text/plain", len(large)),
                ),
            ),
        ),
        attachment_data={"s": small, "l": large},
    )
    try:
        for _ in range(2):
            fake.enqueue(Script(chunks=["ok"]))
            events = [e async for e in provider.stream(request)]
            assert any(isinstance(e, TextDelta) for e in events)
            received = fake.files.received(fake.stream_requests()[-1].body)
            assert [(p.data, p.how) for p in received] == [(small, "inline"), (large, "file")]
        assert len(fake.files.files) == 1  # uploaded once, used again
    finally:
        await provider.aclose()
        await fake.stop()
