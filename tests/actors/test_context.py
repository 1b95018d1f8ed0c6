"""Context building: TOON block of older turns, verbatim tail, token budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import toon_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.compression import (
    HISTORY_HEADER,
    decode_block,
    encode_turns,
    extract_block,
    render_history,
)
from actors.context import (
    SYSTEM_PROMPT,
    VERBATIM_TAIL,
    build_request,
    estimate_request_tokens,
    estimate_tokens,
)
from actors.models.base import ChatTurn, ModelError, ModelRequest, Role
from actors.models.catalog import Catalog, ModelInfo
from actors.models.gemini import GeminiProvider
from standins.gemini import FakeGemini

CATALOG = Catalog.load(gemini_enabled=True)
FLASH = CATALOG.resolve("gemini-2.5-flash-lite")


def conversation(n: int, size: int = 40) -> list[ChatTurn]:
    """``n`` alternating turns ending with a user turn, the tail opening with a user."""
    turns: list[ChatTurn] = []
    for i in range(n):
        role: Role = "user" if (n - 1 - i) % 2 == 0 else "assistant"
        turns.append(ChatTurn(role, f"message {i}: " + "lorem ipsum " * (size // 12)))
    return turns


def build(history: list[ChatTurn], **kwargs: object) -> ModelRequest:
    return asyncio.run(build_request(history=history, model=FLASH, **kwargs))  # type: ignore[arg-type]


def forty() -> list[ChatTurn]:
    """40 stored turns whose last six open with a user turn: the user re-sent after a
    failed generation (stored as an empty assistant turn, which is skipped)."""
    turns = [ChatTurn("user" if i % 2 == 0 else "assistant", f"turn {i} text") for i in range(39)]
    # turns[34] is user, [38] user; a failed answer, then the user asks again.
    return [*turns, ChatTurn("assistant", ""), ChatTurn("user", "turn 39 text")]


# -- the seed's rule ----------------------------------------------------------------------


def test_forty_messages_become_toon_block_plus_six() -> None:
    history = forty()
    kept = [t for t in history if t.content]
    assert len(kept) == 40
    request = build(history)
    assert request.model == "gemini-2.5-flash-lite"
    assert list(request.contents) == kept[-6:]
    assert request.contents[0].role == "user"
    assert request.system.startswith(SYSTEM_PROMPT)
    block = extract_block(request.system)
    assert block is not None and block.startswith("[34]{role,content}:\n")
    rows = toon_format.decode(block)
    assert rows == [{"role": t.role, "content": t.content} for t in kept[:34]]
    assert decode_block(request.system) == kept[:34]


def test_six_or_fewer_messages_have_no_block() -> None:
    for n in (1, 3, 5):
        history = conversation(n)
        request = build(history)
        assert request.system == SYSTEM_PROMPT
        assert list(request.contents) == history
    six = [ChatTurn("user", "a"), *conversation(5)]
    request = build(six)
    assert request.system == SYSTEM_PROMPT and len(request.contents) == VERBATIM_TAIL


def test_leading_assistant_of_tail_moves_into_block() -> None:
    history = conversation(41)  # strictly alternating: the 6th-last is an assistant turn
    request = build(history)
    assert request.contents[0].role == "user"
    assert list(request.contents) == history[-5:]
    assert decode_block(request.system) == history[:-5]


def test_empty_assistant_turns_are_skipped() -> None:
    history = [
        ChatTurn("user", "q1"),
        ChatTurn("assistant", ""),
        ChatTurn("user", "q2"),
    ]
    request = build(history)
    assert list(request.contents) == [ChatTurn("user", "q1"), ChatTurn("user", "q2")]


def test_history_must_end_with_user() -> None:
    """The new user message last, or (to continue an answer) that message and the answer
    so far: nothing else."""
    for history in (
        [ChatTurn("assistant", "a")],
        [ChatTurn("user", "q"), ChatTurn("assistant", "a"), ChatTurn("assistant", "b")],
    ):
        with pytest.raises(ValueError, match="user message"):
            build(history)


def test_a_continue_keeps_the_answer_so_far_last() -> None:
    request = build([*conversation(9), ChatTurn("user", "q"), ChatTurn("assistant", "so far")])
    assert [(t.role, t.content) for t in request.contents[-2:]] == [
        ("user", "q"),
        ("assistant", "so far"),
    ]


def test_tools_and_model_are_carried() -> None:
    request = build(conversation(3), tools=("google_search",), system_prompt="Be brief.")
    assert request.tools == ("google_search",)
    assert request.system == "Be brief."


# -- budget ---------------------------------------------------------------------------------


def test_tiny_budget_drops_oldest_first_and_is_never_exceeded() -> None:
    history = conversation(40, size=200)
    full = build(history)
    for budget in (250, 400, 800, 1500, 3000, estimate_request_tokens(full) - 1):
        request = build(history, budget_tokens=budget, system_prompt="Be brief.")
        assert estimate_request_tokens(request) <= budget
        assert request.contents[-1] == history[-1]
        assert request.contents[0].role == "user"
        older = decode_block(request.system) if extract_block(request.system) else []
        kept = [*older, *request.contents]
        assert kept == history[len(history) - len(kept) :]  # a suffix: oldest went first


def test_budget_from_model_limit_and_fraction() -> None:
    small = ModelInfo(
        id="tiny",
        name="Tiny",
        description="",
        input_token_limit=1000,
        tools=frozenset(),
        status="available",
        successor=None,
        provider="demo",
    )
    history = conversation(40, size=200)
    request = asyncio.run(build_request(history=history, model=small, system_prompt="x"))
    assert estimate_request_tokens(request) <= 800
    request = asyncio.run(
        build_request(history=history, model=small, system_prompt="x", budget_fraction=0.4)
    )
    assert estimate_request_tokens(request) <= 400


def test_last_message_too_long_is_bad_request() -> None:
    history = [ChatTurn("user", "hello"), ChatTurn("assistant", "hi"), ChatTurn("user", "x" * 5000)]
    with pytest.raises(ModelError) as info:
        build(history, budget_tokens=1000)
    assert info.value.code == "bad_request"
    assert "message too long for model gemini-2.5-flash-lite" in info.value.message


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    server = FakeGemini()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def count_requests(fake: FakeGemini) -> int:
    return sum(r.path.endswith(":countTokens") for r in fake.requests)


@pytest.mark.asyncio
async def test_provider_count_is_used_once_when_it_fits(fake: FakeGemini) -> None:
    provider = GeminiProvider("k", base_url=fake.base_url)
    try:
        history = conversation(40, size=200)
        request = await build_request(
            history=history, model=FLASH, provider=provider, budget_tokens=1500
        )
        assert count_requests(fake) == 1
        assert estimate_request_tokens(request) <= 1500
        assert (await provider.count_tokens(request) or 0) <= 1500
    finally:
        await provider.aclose()


@pytest.mark.asyncio
async def test_provider_count_larger_than_estimate_shrinks_further(fake: FakeGemini) -> None:
    fake.count_scale = 3.0  # the "real" tokenizer counts far more than our estimate
    provider = GeminiProvider("k", base_url=fake.base_url)
    try:
        history = conversation(40, size=200)
        budget = 1500
        plain = await build_request(history=history, model=FLASH, budget_tokens=budget)
        request = await build_request(
            history=history, model=FLASH, provider=provider, budget_tokens=budget
        )
        measured = await provider.count_tokens(request)
        assert measured is not None and measured <= budget
        assert estimate_request_tokens(request) < estimate_request_tokens(plain)
        assert request.contents[-1] == history[-1]
        assert 2 <= count_requests(fake) <= 4
    finally:
        await provider.aclose()


@pytest.mark.asyncio
async def test_small_request_skips_the_count(fake: FakeGemini) -> None:
    provider = GeminiProvider("k", base_url=fake.base_url)
    try:
        await build_request(history=conversation(3), model=FLASH, provider=provider)
        assert count_requests(fake) == 0
    finally:
        await provider.aclose()


@pytest.mark.asyncio
async def test_count_failure_falls_back_to_estimate() -> None:
    provider = GeminiProvider("k", base_url="http://127.0.0.1:9", first_chunk_timeout=2)
    try:
        history = conversation(40, size=200)
        request = await build_request(
            history=history, model=FLASH, provider=provider, budget_tokens=900
        )
        assert estimate_request_tokens(request) <= 900
    finally:
        await provider.aclose()


# -- estimate and TOON ----------------------------------------------------------------------


def test_estimate_tokens_calibration() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    prose = "The quick brown fox jumps over the lazy dog. " * 20
    assert len(prose) / 4.6 <= estimate_tokens(prose) <= len(prose) / 3
    code = 'def f(x):\n    return {"a": [x, x * 2]}\n' * 10
    assert estimate_tokens(code) > len(code) / 4  # punctuation costs more
    assert estimate_tokens("日本語のテキスト") >= 8  # a token per CJK character
    assert estimate_tokens("Привет, мир") > estimate_tokens("Privet, mir")
    assert estimate_tokens("🙂") == 2


@given(st.text(), st.text())
def test_estimate_is_subadditive_within_rounding(a: str, b: str) -> None:
    assert estimate_tokens(a + b) <= estimate_tokens(a) + estimate_tokens(b) + 1
    assert estimate_tokens(a + b) >= max(estimate_tokens(a), estimate_tokens(b)) - 1


roles = st.sampled_from(["user", "assistant"])
contents = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=120
) | st.sampled_from(["42", "true", "null", "-1.5", "a,b", '"quoted"', "x: y", "- item", " pad "])


@given(st.lists(st.builds(ChatTurn, roles, contents), max_size=30))
def test_toon_block_round_trips(turns: list[ChatTurn]) -> None:
    block = encode_turns(turns)
    if turns:
        assert block.startswith(f"[{len(turns)}]{{role,content}}:")
    assert decode_block(block) == turns
    assert decode_block("Some prompt.\n\n" + render_history(turns)) == turns
    assert HISTORY_HEADER in render_history(turns)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    older=st.lists(st.builds(ChatTurn, roles, contents), max_size=40),
    last=st.text(min_size=1, max_size=300).filter(lambda s: s != ""),
    budget=st.integers(min_value=1, max_value=3000),
)
def test_built_request_fits_and_keeps_last_message(
    older: list[ChatTurn], last: str, budget: int
) -> None:
    history = [*older, ChatTurn("user", last)]
    try:
        request = build(history, budget_tokens=budget, system_prompt="Sys.")
    except ModelError as exc:
        assert exc.code == "bad_request"
        alone = ModelRequest(model=FLASH.id, system="Sys.", contents=(ChatTurn("user", last),))
        assert estimate_request_tokens(alone) > budget
        return
    assert estimate_request_tokens(request) <= budget
    assert request.contents[-1] == ChatTurn("user", last)
    assert request.contents[0].role == "user"
    assert len(request.contents) <= VERBATIM_TAIL
    kept_history = [t for t in history if t.content]
    block = extract_block(request.system)
    kept = [*(decode_block(request.system) if block else []), *request.contents]
    assert kept == kept_history[len(kept_history) - len(kept) :]
