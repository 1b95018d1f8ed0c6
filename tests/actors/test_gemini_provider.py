"""GeminiProvider through the real google-genai SDK against FakeGemini over HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio
from google import genai
from google.genai import types

from actors.models.base import (
    ChatTurn,
    Citation,
    Final,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolStep,
    Usage,
)
from actors.models.gemini import GeminiProvider
from standins.gemini import FakeGemini, HttpError, Script, parse_all_ts, parse_ts
from tests.conditions import until
from tests.conftest import make_settings

MODEL = "gemini-2.5-flash-lite"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    server = FakeGemini()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


#: The decoder under test: the server's default unless CERO_TEST_GEMINI_DECODER says
#: otherwise (tests/conftest.py; run the module once per decoder).
DECODER = make_settings("sqlite:///unused.db").gemini_decoder


def make_provider(base_url: str, **kwargs: float) -> GeminiProvider:
    options: dict[str, float] = {"backoff_base": 0.001, "backoff_max": 0.01}
    options.update(kwargs)
    return GeminiProvider(
        "test-key",
        base_url=base_url,
        decoder=DECODER,
        **options,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def provider(fake: FakeGemini) -> AsyncIterator[GeminiProvider]:
    prov = make_provider(fake.base_url)
    try:
        yield prov
    finally:
        await prov.aclose()


def request(*tools: str, system: str = "You are a test.") -> ModelRequest:
    return ModelRequest(
        model=MODEL,
        system=system,
        contents=(
            ChatTurn("user", "Hi"),
            ChatTurn("assistant", "Hello!"),
            ChatTurn("user", "What is 2+2?"),
        ),
        tools=tools,
    )


async def collect(
    prov: GeminiProvider, req: ModelRequest
) -> tuple[list[ModelEvent], ModelError | None]:
    events: list[ModelEvent] = []
    try:
        async for event in prov.stream(req):
            events.append(event)
    except ModelError as exc:
        return events, exc
    return events, None


def texts(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.asyncio
async def test_text_streams_and_final(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(Script(chunks=["Two", " plus two", " is four."]))
    events, error = await collect(provider, request())
    assert error is None
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("Two"),
        TextDelta(" plus two"),
        TextDelta(" is four."),
    ]
    assert isinstance(events[-1], Final)
    assert events[-1].finish_reason == "STOP"
    assert sum(isinstance(e, Final) for e in events) == 1


@pytest.mark.asyncio
async def test_request_body_carries_system_contents_and_tools(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    await collect(provider, request("google_search", "url_context", "code_execution"))
    (sent,) = fake.requests
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    assert sent.headers["x-goog-api-key"] == "test-key"
    body = sent.body
    assert body["systemInstruction"]["parts"] == [{"text": "You are a test."}]
    assert [(c["role"], c["parts"]) for c in body["contents"]] == [
        ("user", [{"text": "Hi"}]),
        ("model", [{"text": "Hello!"}]),
        ("user", [{"text": "What is 2+2?"}]),
    ]
    assert body["tools"] == [{"googleSearch": {}}, {"urlContext": {}}, {"codeExecution": {}}]


@pytest.mark.parametrize(
    ("tools", "system", "max_output_tokens"),
    [((), "You are a test.", None), (("google_search", "code_execution"), "", 77)],
)
@pytest.mark.asyncio
async def test_request_body_is_the_sdks_own(
    fake: FakeGemini,
    provider: GeminiProvider,
    tools: tuple[str, ...],
    system: str,
    max_output_tokens: int | None,
) -> None:
    """The provider shapes its input for the SDK's cheap path (dicts, a ``Part`` whose
    ``in`` answers at once): the body sent must be exactly what the SDK sends for the
    plain types a caller would pass."""
    req = replace(request(*tools, system=system), max_output_tokens=max_output_tokens)
    await collect(provider, req)
    client = genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta"),
    )
    plain = types.GenerateContentConfig(
        system_instruction=system or None,
        tools=[
            types.Tool(google_search=types.GoogleSearch())
            if name == "google_search"
            else types.Tool(code_execution=types.ToolCodeExecution())
            for name in tools
        ]
        or None,
        max_output_tokens=max_output_tokens,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        types.Content(
            role="user" if t.role == "user" else "model", parts=[types.Part(text=t.content)]
        )
        for t in req.contents
    ]
    async for _ in await client.aio.models.generate_content_stream(
        model=MODEL, contents=contents, config=plain
    ):
        pass
    await client.aio.aclose()
    ours, theirs = fake.requests
    assert ours.body == theirs.body
    assert ours.path == theirs.path


@pytest.mark.asyncio
async def test_no_tools_sends_no_tools(fake: FakeGemini, provider: GeminiProvider) -> None:
    await collect(provider, request())
    assert "tools" not in fake.requests[0].body


@pytest.mark.asyncio
async def test_thought_parts_are_excluded(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(
        Script(
            chunks=[
                {"text": "Let me think...", "thought": True},
                "Four",
                {"text": "hm", "thought": True},
            ]
        )
    )
    events, error = await collect(provider, request())
    assert error is None
    assert texts(events) == "Four"


@pytest.mark.asyncio
async def test_tool_steps_citations_and_usage(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(
        Script(
            chunks=[
                {"executableCode": {"language": "PYTHON", "code": "print(2+2)"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "4\n"}},
                "It is 4.",
            ],
            grounding={
                "webSearchQueries": ["2+2", "arithmetic"],
                "groundingChunks": [
                    {"web": {"uri": "https://a.example", "title": "A"}},
                    {"web": {"uri": "https://b.example", "title": "B"}},
                    {"web": {"uri": "https://a.example", "title": "A again"}},
                ],
            },
            url_context={
                "urlMetadata": [
                    {
                        "retrievedUrl": "https://c.example",
                        "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS",
                    }
                ]
            },
            usage={
                "promptTokenCount": 12,
                "candidatesTokenCount": 7,
                "thoughtsTokenCount": 5,
                "toolUsePromptTokenCount": 3,
                "totalTokenCount": 27,
            },
        )
    )
    events, error = await collect(
        provider, request("google_search", "url_context", "code_execution")
    )
    assert error is None
    steps = [e for e in events if isinstance(e, ToolStep)]
    assert ToolStep("code_execution", {"language": "PYTHON", "code": "print(2+2)"}) in steps
    assert ToolStep("code_execution_result", {"outcome": "OUTCOME_OK", "output": "4\n"}) in steps
    assert [s for s in steps if s.tool == "google_search"] == [
        ToolStep("google_search", {"queries": ["2+2", "arithmetic"]})
    ]
    assert [s for s in steps if s.tool == "url_context"] == [
        ToolStep(
            "url_context",
            {"urls": [{"url": "https://c.example", "status": "URL_RETRIEVAL_STATUS_SUCCESS"}]},
        )
    ]
    assert texts(events) == "It is 4."
    final = events[-1]
    assert isinstance(final, Final)
    assert final.usage == Usage(
        prompt_tokens=12, output_tokens=7, thoughts_tokens=5, total_tokens=27
    )
    assert final.citations == (
        Citation("https://a.example", "A"),
        Citation("https://b.example", "B"),
    )


@pytest.mark.asyncio
async def test_missing_usage_is_zero(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(Script(chunks=["x"], usage={}))
    events, _ = await collect(provider, request())
    assert isinstance(events[-1], Final)
    assert events[-1].usage == Usage()


@pytest.mark.asyncio
async def test_429_then_success_gives_one_answer(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=["Once", " only"], error_before=[429]))
    events, error = await collect(provider, request())
    assert error is None
    assert texts(events) == "Once only"
    assert len(fake.stream_requests()) == 2


@pytest.mark.asyncio
async def test_429_four_times_is_rate_limited_after_four_requests(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(error_before=[429, 429, 429, 429]))
    events, error = await collect(provider, request())
    assert events == []
    assert error is not None and error.code == "rate_limited"
    assert len(fake.stream_requests()) == 4


@pytest.mark.asyncio
async def test_503_and_504_are_retried(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(Script(chunks=["ok"], error_before=[503, 504, 500]))
    events, error = await collect(provider, request())
    assert error is None and texts(events) == "ok"
    assert len(fake.stream_requests()) == 4


@pytest.mark.asyncio
async def test_retry_info_delay_is_honoured(fake: FakeGemini) -> None:
    prov = make_provider(fake.base_url, backoff_max=5.0)
    try:
        fake.enqueue(Script(chunks=["late"], error_before=[HttpError(429, retry_delay="2s")]))
        task = asyncio.create_task(collect(prov, request()))
        # From the first request (the client's first use loads CA bundles: slow when the
        # machine is busy), not from the call.
        await until(lambda: len(fake.stream_requests()) == 1, 10.0)
        done, _ = await asyncio.wait({task}, timeout=0.5)
        assert not done
        # Without the hint the retry would have come after at most 1 ms.
        assert len(fake.stream_requests()) == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_retry_info_delay_is_capped_by_backoff_max(fake: FakeGemini) -> None:
    prov = make_provider(fake.base_url, backoff_max=0.05)
    try:
        fake.enqueue(Script(chunks=["soon"], error_before=[HttpError(429, retry_delay="30s")]))
        events, error = await asyncio.wait_for(collect(prov, request()), timeout=5)
        assert error is None and texts(events) == "soon"
        assert len(fake.stream_requests()) == 2
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_error_mid_stream_after_text_is_not_retried(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=["Partial", " answer", " never"], error_after_chunks=2))
    events, error = await collect(provider, request())
    assert texts(events) == "Partial answer"
    assert not any(isinstance(e, Final) for e in events)
    assert error is not None and error.code == "upstream_unavailable"
    assert len(fake.stream_requests()) == 1


@pytest.mark.asyncio
async def test_error_mid_stream_before_any_event_is_retried(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=["x"], error_after_chunks=0), Script(chunks=["fine"]))
    events, error = await collect(provider, request())
    assert error is None and texts(events) == "fine"
    assert len(fake.stream_requests()) == 2


@pytest.mark.asyncio
async def test_dropped_connection_after_text_is_upstream_unavailable(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=["a", "b", "c"], drop_connection_after=1))
    events, error = await collect(provider, request())
    assert texts(events) == "a"
    assert error is not None and error.code == "upstream_unavailable"
    assert len(fake.stream_requests()) == 1


@pytest.mark.asyncio
async def test_stall_before_first_chunk_is_upstream_timeout(fake: FakeGemini) -> None:
    prov = make_provider(fake.base_url, first_chunk_timeout=0.3, chunk_timeout=0.3)
    try:
        fake.enqueue(Script(chunks=["too late"], stall_before_first=3))
        started = time.monotonic()
        events, error = await collect(prov, request())
        assert time.monotonic() - started < 2
        assert events == []
        assert error is not None and error.code == "upstream_timeout"
        assert len(fake.stream_requests()) == 1
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_stall_between_chunks_is_upstream_timeout(fake: FakeGemini) -> None:
    prov = make_provider(fake.base_url, first_chunk_timeout=0.3, chunk_timeout=0.3)
    try:
        fake.enqueue(Script(chunks=["first", " second"], stall_after=1, stall_seconds=3))
        events, error = await collect(prov, request())
        assert texts(events) == "first"
        assert error is not None and error.code == "upstream_timeout"
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_blocked_prompt(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(Script(block_reason="SAFETY"))
    events, error = await collect(provider, request())
    assert events == []
    assert error is not None and error.code == "blocked"
    assert len(fake.stream_requests()) == 1


@pytest.mark.asyncio
async def test_safety_finish_after_text_yields_text_then_blocked(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=["Some", " text"], finish_reason="SAFETY"))
    events, error = await collect(provider, request())
    assert texts(events) == "Some text"
    assert not any(isinstance(e, Final) for e in events)
    assert error is not None and error.code == "blocked"


@pytest.mark.asyncio
async def test_max_tokens_finish_is_a_final(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.enqueue(Script(chunks=["cut"], finish_reason="MAX_TOKENS"))
    events, error = await collect(provider, request())
    assert error is None
    assert isinstance(events[-1], Final) and events[-1].finish_reason == "MAX_TOKENS"


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_are_bad_request_without_retry(
    fake: FakeGemini, provider: GeminiProvider, status: int
) -> None:
    fake.enqueue(Script(error_before=[status]))
    events, error = await collect(provider, request())
    assert events == []
    assert error is not None and error.code == "bad_request"
    assert len(fake.stream_requests()) == 1


@pytest.mark.asyncio
async def test_unreachable_upstream_is_upstream_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prov = make_provider(f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        events, error = await collect(prov, request())
        assert time.monotonic() - started < 3  # the SDK's own 1-10 s retry sleep is off
        assert events == []
        assert error is not None and error.code == "upstream_unavailable"
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_cancelling_the_consumer_closes_the_http_stream(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=[f"t{i} " for i in range(200)], chunk_delay=0.02))
    got: list[ModelEvent] = []
    two = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(request()):
            got.append(event)
            if len(got) == 2:
                two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: fake.disconnects > 0, 1.0)
    assert fake.disconnects == 1
    assert fake.completed_streams == 0


@pytest.mark.asyncio
async def test_breaking_out_closes_the_http_stream(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(chunks=[f"t{i} " for i in range(200)], chunk_delay=0.02))
    stream = provider.stream(request())
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    await until(lambda: fake.disconnects > 0, 1.0)
    assert fake.disconnects == 1


@pytest.mark.asyncio
async def test_count_tokens(fake: FakeGemini, provider: GeminiProvider) -> None:
    req = request()
    counted = await provider.count_tokens(req)
    chars = len(req.system) + sum(len(t.content) for t in req.contents)
    assert counted == (chars + 3) // 4
    sent = fake.requests[-1]
    assert sent.path.endswith(":countTokens")
    assert "systemInstruction" not in sent.body  # the Developer API rejects it


@pytest.mark.asyncio
async def test_count_tokens_failure_is_none() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prov = make_provider(f"http://127.0.0.1:{port}")
    try:
        assert await prov.count_tokens(request()) is None
    finally:
        await prov.aclose()


@pytest.mark.asyncio
async def test_rate_mode_tokens_carry_send_timestamps(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.enqueue(Script(timed_tokens=5, tokens_per_second=100))
    events, error = await collect(provider, request())
    assert error is None
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    stamps = [stamp for t in deltas if (stamp := parse_ts(t)) is not None]
    assert len(stamps) == 5
    assert parse_all_ts("".join(deltas)) == stamps
    assert stamps == sorted(stamps)
    assert abs(time.time() - stamps[-1]) < 5


@pytest.mark.asyncio
async def test_default_script_echoes(fake: FakeGemini, provider: GeminiProvider) -> None:
    events, error = await collect(provider, request())
    assert error is None
    assert texts(events) == "You said: What is 2+2?"


@pytest.mark.asyncio
async def test_a_slow_steady_stream_is_not_timed_out(fake: FakeGemini) -> None:
    """Every chunk inside the chunk timeout, the whole stream far longer than it."""
    prov = make_provider(fake.base_url, first_chunk_timeout=0.3, chunk_timeout=0.3)
    try:
        fake.enqueue(Script(chunks=[f"c{i} " for i in range(8)], chunk_delay=0.15))
        started = time.monotonic()
        events, error = await collect(prov, request())
        assert time.monotonic() - started > 0.9
        assert error is None
        assert texts(events) == "".join(f"c{i} " for i in range(8))
    finally:
        await prov.aclose()
