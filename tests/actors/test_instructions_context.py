"""Instructions in the model request (docs/api.md, Instructions): where they go in the
system instruction, that the token budget counts them, and that the actor reads them for
every send (a change is seen by the next send, with no restart and no cache)."""

from __future__ import annotations

import asyncio

import pytest

from actors.compression import decode_block, extract_block
from actors.context import (
    CONVERSATION_SECTION,
    SYSTEM_PROMPT,
    USER_SECTION,
    build_request,
    estimate_request_tokens,
    estimate_tokens,
    with_instructions,
)
from actors.models.base import ChatTurn, Final, ModelError, ModelRequest
from actors.models.catalog import Catalog
from actors.store import Instructions
from tests.actors.test_actor_unit import MODEL, harness
from tests.actors.test_context import conversation, forty

FLASH = Catalog.load(gemini_enabled=True).resolve("gemini-2.5-flash-lite")
MINE = Instructions(user="I am a botanist. Answer in metric units.", conversation="Be terse.")


def build(history: list[ChatTurn], **kwargs: object) -> ModelRequest:
    return asyncio.run(build_request(history=history, model=FLASH, **kwargs))  # type: ignore[arg-type]


def test_no_instructions_leave_the_system_instruction_as_it_was() -> None:
    history = conversation(3)
    for none in (None, Instructions(), Instructions(user="", conversation="")):
        assert build(history, instructions=none).system == SYSTEM_PROMPT
    assert with_instructions("p", None) == "p"


def test_the_prompt_then_the_users_then_the_conversations_then_the_block() -> None:
    history = forty()
    request = build(history, instructions=MINE)
    system = request.system
    assert system.startswith(SYSTEM_PROMPT + "\n\n" + USER_SECTION[0] + "\n")
    user_at = system.index(f"<user_instructions>\n{MINE.user}\n</user_instructions>")
    conv_tag = "<conversation_instructions>\nBe terse.\n</conversation_instructions>"
    conv_at = system.index(CONVERSATION_SECTION[0] + "\n" + CONVERSATION_SECTION[1] + "\n")
    assert user_at < conv_at < system.index(conv_tag)
    block = extract_block(system)
    assert block is not None and system.index(conv_tag) < system.index(block)
    kept = [t for t in history if t.content]
    assert decode_block(system) == kept[:34]  # the TOON block is unchanged after them
    assert list(request.contents) == kept[-6:]
    # Only one of the two: only its section.
    only_conv = build(history, instructions=Instructions(conversation="Be terse.")).system
    assert USER_SECTION[0] not in only_conv and conv_tag in only_conv
    only_user = build(history, instructions=Instructions(user="Call me Ada.")).system
    assert "Call me Ada." in only_user and CONVERSATION_SECTION[0] not in only_user


def test_the_budget_counts_the_instructions() -> None:
    history = conversation(40, size=200)
    budget = estimate_request_tokens(build(history)) + 10  # everything fits, just
    plain = build(history, budget_tokens=budget)
    long = Instructions(user="Always explain your reasoning step by step. " * 40)
    assert estimate_tokens(long.user or "") > 100
    request = build(history, budget_tokens=budget, instructions=long)
    assert estimate_request_tokens(request) <= budget
    # The instructions are kept whole; older turns went to make room for them.
    assert "<user_instructions>\n" + (long.user or "") + "\n</user_instructions>" in request.system
    dropped = len(decode_block(plain.system)) - len(decode_block(request.system))
    assert dropped > 0 and list(request.contents) == list(plain.contents)


def test_instructions_that_leave_no_room_for_the_message_are_bad_request() -> None:
    history = [ChatTurn("user", "hello")]
    huge = Instructions(conversation="word " * 4000)
    with pytest.raises(ModelError) as info:
        build(history, budget_tokens=1000, instructions=huge)
    assert info.value.code == "bad_request"
    assert build(history, budget_tokens=1000).contents == (ChatTurn("user", "hello"),)


async def test_the_actor_reads_the_instructions_for_every_send() -> None:
    async with harness() as h:
        store, conversation_id = h.store, h.conversation_id
        first = h.provider.enqueue("one", Final())
        await h.actor.send("hi", model=MODEL)
        await h.watch.until_type("done")
        assert first.request is not None and first.request.system == ""
        # Changed while the actor lives (and holds its context): the next send sees it.
        store.user_instructions["user-1"] = "Call me Ada."
        store.conversation_instructions[conversation_id] = "Answer in French."
        second = h.provider.enqueue("deux", Final())
        await h.actor.send("again", model=MODEL)
        await h.watch.until(lambda e: e.type == "done" and e.data["fullText"] == "deux")
        assert second.request is not None
        system = second.request.system
        assert system.index("Call me Ada.") < system.index("Answer in French.")
        # Cleared: gone from the next send.
        del store.user_instructions["user-1"]
        del store.conversation_instructions[conversation_id]
        third = h.provider.enqueue("three", Final())
        await h.actor.send("once more", model=MODEL)
        await h.watch.until(lambda e: e.type == "done" and e.data["fullText"] == "three")
        assert third.request is not None and third.request.system == ""
