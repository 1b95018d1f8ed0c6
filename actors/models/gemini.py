"""Gemini through google-genai, behind the :class:`~actors.models.base.ModelProvider` protocol.

Why it looks the way it does (facts in GEMINI.md):

- One ``genai.Client`` per provider, pinned to ``v1beta`` (where the built-in tools are
  documented), with the SDK's own retries switched off (``HttpRetryOptions(attempts=1)``)
  so this module alone owns the retry policy: exponential backoff with full jitter,
  honouring ``RetryInfo.retryDelay``, at most ``max_retries`` retries and only before the
  first event was yielded. After the first event an error ends the stream: retrying
  then would repeat text the user has already seen.
- The SDK sends nothing until the first ``async for`` step, so the first-chunk timeout
  covers connecting, the request and the model's time to first token.
- A finish for safety reasons (SAFETY, BLOCKLIST, PROHIBITED_CONTENT, SPII) after some
  text still yields that text, then raises ``ModelError("blocked")`` instead of a
  :class:`Final`: the actor stores the partial answer with status ``error``.

- Two decoders read the same stream (``decoder``, ``CERO_GEMINI_DECODER``): ``wire``
  (default) reads the SSE with aiohttp + orjson (:mod:`actors.models.gemini_wire`) in the
  consumer's task; ``sdk`` reads it through ``generate_content_stream`` and the read-ahead
  pump below. The request, the retry policy and the error classes are the same for both,
  and :mod:`actors.models.gemini_translate` turns either's chunks into the same events.

Why one module of ~500 lines: the request builder, the two stream readers and the retry
policy share one set of upstream error rules; split, each reader would import the others'.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from typing import Final as FinalType

import aiohttp
import pydantic
import structlog
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from actors.generation_timing import CURRENT
from actors.models.base import ErrorCode, ModelError, ModelEvent, ModelRequest
from actors.models.gemini_files import GeminiFiles, with_parts
from actors.models.gemini_translate import Translator
from actors.models.gemini_wire import WireStreams
from actors.models.idle_deadline import IdleDeadline
from actors.models.titles import TITLE_INSTRUCTION, title_request_text

log = structlog.get_logger(__name__)

API_VERSION: FinalType = "v1beta"
#: HTTP statuses worth another attempt (before the first event only).
RETRYABLE_STATUSES: FinalType = frozenset({429, 500, 502, 503, 504})
#: Finish reasons that mean the answer was withheld for policy reasons.
BLOCKED_FINISHES: FinalType = frozenset({"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def _tool(name: str) -> types.Tool:
    if name == "google_search":
        return types.Tool(google_search=types.GoogleSearch())
    if name == "url_context":
        return types.Tool(url_context=types.UrlContext())
    if name == "code_execution":
        return types.Tool(code_execution=types.ToolCodeExecution())
    raise ModelError("bad_request", f"unknown tool '{name}'")


if TYPE_CHECKING:
    # mypy sees the SDK's classes: the pydantic plugin cannot synthesise a subclass's
    # __init__ when Pillow is installed (the SDK's PIL_Image annotation is unresolvable).
    _Part = types.Part
    _Config = types.GenerateContentConfig
    _NoAfc = types.AutomaticFunctionCallingConfig
else:

    class _Part(types.Part):
        """A ``types.Part`` whose ``in`` answers at once (see :func:`_contains`)."""

        def __contains__(self, key: object) -> bool:
            return _contains(self, key)

    class _Config(types.GenerateContentConfig):
        """A ``types.GenerateContentConfig`` whose ``in`` answers at once."""

        def __contains__(self, key: object) -> bool:
            return _contains(self, key)

    class _NoAfc(types.AutomaticFunctionCallingConfig):
        def __contains__(self, key: object) -> bool:
            return _contains(self, key)


def _contains(model: pydantic.BaseModel, key: object) -> bool:
    """What ``key in model`` means for a pydantic model, without the scan for a name.

    pydantic models have no ``__contains__``, so ``in`` iterates the model's
    ``(name, value)`` pairs: never equal to a string. The SDK's request builder asks
    ``name in model`` before every field it reads (~190 scans, ~4,200 fields visited
    per request, profiled), always to hear ``False``; answering at once is the same
    answer.
    """
    return not isinstance(key, str) and any(item == key for item in model)


def _text(text: str) -> _Part:
    return _Part(text=text)


def _contents(
    request: ModelRequest, attachment_parts: Mapping[str, Any] | None = None
) -> list[Any]:
    """The turns as the SDK's ``contents``, shaped for the SDK's cheapest path.

    Measured (scenario 4's request, 6 turns and a system instruction, google-genai
    3.6.1): the SDK spent 1.9–2.8 ms building each request before it left — the largest
    phase of a turn's time to first token. Two things cost it: validating ``Content``
    *instances* against the ``contents`` union (pydantic tries each member by attribute,
    ~1.0 ms; dicts validate in ~0.2 ms) and the ``in`` scans above. Dicts for the turns
    and :class:`_Part` for their text make it 0.5 ms, for the same request body byte for
    byte (``tests/actors/test_gemini_provider.py``).

    ``attachment_parts``: each attachment's part (:mod:`actors.models.gemini_files`),
    after its message's text.
    """
    return [
        {
            "role": "user" if turn.role == "user" else "model",
            "parts": with_parts([_text(turn.content)], turn.attachments, attachment_parts or {}),
        }
        for turn in request.contents
    ]


def retry_delay_of(error: genai_errors.APIError) -> float | None:
    """The ``RetryInfo.retryDelay`` (seconds) carried by a Google error, if any."""
    body = error.details
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, dict) and item.get("@type") == _RETRY_INFO:
            delay = item.get("retryDelay")
            if isinstance(delay, str) and (match := _DURATION.match(delay)):
                return float(match.group(1))
            if isinstance(delay, dict):  # {"seconds": N, "nanos": M}
                seconds = delay.get("seconds", 0)
                nanos = delay.get("nanos", 0)
                if isinstance(seconds, (int, str)) and isinstance(nanos, int):
                    return float(seconds) + nanos / 1e9
    return None


def classify(error: BaseException) -> tuple[ErrorCode, bool]:
    """The contract's error code for an upstream failure, and whether to retry it."""
    if isinstance(error, genai_errors.APIError):
        code = error.code
        if code == 429:
            return "rate_limited", True
        if isinstance(code, int) and 500 <= code < 600:
            return "upstream_unavailable", code in RETRYABLE_STATUSES
        if code in (400, 401, 403, 404):
            return "bad_request", False
        return "internal", False
    if isinstance(error, genai_errors.UnknownApiResponseError):
        # A chunk that is not JSON (a garbled or cut stream): the upstream's fault, not ours.
        return "upstream_unavailable", True
    if isinstance(error, TimeoutError):
        return "upstream_timeout", False
    if isinstance(error, (aiohttp.ClientError, ConnectionError, OSError)):
        return "upstream_unavailable", True
    return "internal", False


def _describe(error: BaseException) -> str:
    if isinstance(error, genai_errors.APIError):
        return f"Gemini answered {error.code} {error.status or ''}: {error.message or ''}".strip()
    if isinstance(error, genai_errors.UnknownApiResponseError):
        return "Gemini sent a malformed response"  # not the raw text: it goes to clients
    return f"Gemini request failed: {type(error).__name__}: {error}"


class _End:
    """Marks the end of the SDK stream in the pump's queue."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_END = _End()
_Item = types.GenerateContentResponse | _Failed | _End  # SDK path


class _ChunkPump:
    """Reads the SDK stream in its own task, a bounded distance ahead of the consumer.

    The bound is backpressure: the SDK parses every chunk into pydantic objects, and an
    unbounded read-ahead lets a fast upstream eat the CPU that delivery needs.

    Closing must unwind the SDK's chain of async generators from the inside: closing only
    the outermost one leaves the HTTP response open until garbage collection, whereas a
    cancellation raised inside the SDK's read runs every ``finally`` and releases (and,
    mid-body, closes) the connection. So :meth:`close` cancels the task only while it is
    reading; if it is waiting for queue space, the queue is emptied first to send it back
    into a read.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[AsyncIterator[types.GenerateContentResponse]]],
    ) -> None:
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=READ_AHEAD)
        self._reading = False
        self._task = asyncio.create_task(self._run(open_stream))

    async def _run(
        self,
        open_stream: Callable[[], Awaitable[AsyncIterator[types.GenerateContentResponse]]],
    ) -> None:
        try:
            self._reading = True
            chunks = (await open_stream()).__aiter__()
            first = True
            while True:
                self._reading = True
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self._reading = False
                await self._queue.put(chunk)
                if first:
                    # Hand the first chunk over before parsing ahead: chunks already
                    # buffered would otherwise be parsed (~0.2 ms each) while the first
                    # token waits (0.38 ms p50 of scenario 4's time to first token).
                    first = False
                    await asyncio.sleep(0)
        except Exception as exc:
            self._reading = False
            await self._queue.put(_Failed(exc))
        else:
            await self._queue.put(_END)

    async def next(self) -> types.GenerateContentResponse | None:
        """The next chunk, ``None`` at the end; raises the stream's error."""
        item = await self._queue.get()
        if isinstance(item, _Failed):
            raise item.error
        if isinstance(item, _End):
            return None
        return item

    async def close(self) -> None:
        task = self._task
        for _ in range(1000):
            if task.done():
                return
            if self._reading:
                break
            while not self._queue.empty():  # free the pump from a full queue
                self._queue.get_nowait()
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task})


#: Output tokens a title may take (thinking models spend some before the title).
TITLE_MAX_TOKENS = 2048


#: Chunks the pump may parse ahead of the consumer.
READ_AHEAD = 8
#: Bytes aiohttp buffers per model response before it stops reading the socket.
READ_BUFFER = 1 << 16


def _turn_trace() -> aiohttp.TraceConfig:
    """``model_build`` and ``model_upstream`` of the turn whose request this is (see
    :mod:`actors.generation_timing`); a turn's first attempt only."""
    trace = aiohttp.TraceConfig()

    async def started(*_: object) -> None:
        timing = CURRENT.get()
        if timing is not None and "sent" not in timing.marks:
            timing.since("model_build", "requesting", timing.mark("sent"))

    async def answered(*_: object) -> None:
        timing = CURRENT.get()
        if timing is not None and "answered_head" not in timing.marks:
            timing.since("model_upstream", "sent", timing.mark("answered_head"))

    trace.on_request_start.append(started)
    trace.on_request_end.append(answered)
    return trace


class _WireReader:
    """The wire path's chunks, read in the consumer's own task (no read-ahead).

    Without the SDK's models a chunk costs about what reading it off the socket costs,
    so a pump task (a queue and a task switch per chunk) would be most of the remaining
    work. One async generator of ours reads the response: cancelling or closing it runs
    its ``finally``, which closes the connection.
    """

    def __init__(self, chunks: AsyncIterator[Any]) -> None:
        self._chunks = chunks

    async def next(self) -> Any | None:
        """The next decoded chunk, ``None`` at the end; raises the stream's error."""
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]


Decoder = Literal["wire", "sdk"]


class GeminiProvider:
    """Streams Gemini answers as :data:`~actors.models.base.ModelEvent` values.

    ``decoder="wire"`` (the default) reads the stream with aiohttp + orjson
    (:mod:`actors.models.gemini_wire`); ``"sdk"`` through google-genai's
    ``generate_content_stream``. Both yield the same events for the same stream
    (``tests/actors/test_gemini_decoders.py``).
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        first_chunk_timeout: float = 30,
        chunk_timeout: float = 60,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        rng: random.Random | None = None,
        max_connections: int = 1000,
        decoder: Decoder = "wire",
        inline_max_bytes: int = 14 << 20,
    ) -> None:
        self._files = GeminiFiles(inline_max_bytes)
        self.max_connections = max_connections
        self.decoder: Decoder = decoder
        #: Model streams open now (requests holding a connection): a gauge in /metrics.
        self.open_streams = 0
        self.first_chunk_timeout = first_chunk_timeout
        self.chunk_timeout = chunk_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._api_key = api_key
        self._base_url = base_url
        self._session: aiohttp.ClientSession | None = None
        self._client_instance: genai.Client | None = None
        self._wire_instance: WireStreams | None = None

    @property
    def _wire(self) -> WireStreams:
        if self._wire_instance is None:
            client = self._client
            assert self._session is not None
            self._wire_instance = WireStreams(client, self._session)
        return self._wire_instance

    def _open(
        self,
        model: str,
        contents: list[Any],
        config: types.GenerateContentConfig,
        translator: Translator,
    ) -> tuple[_ChunkPump | _WireReader, Callable[[Any], list[ModelEvent]]]:
        """A reader of one attempt's chunks and the translator's method for them."""
        if self.decoder == "wire":
            reader = _WireReader(self._wire.chunks(model, contents, config))
            return reader, translator.feed_wire
        # Made here, before the first-chunk timeout starts: a new client loads CA bundles
        # (~0.1-0.5 s, once per provider), which is not the upstream's delay.
        client = self._client
        pump = _ChunkPump(
            lambda: client.aio.models.generate_content_stream(
                model=model, contents=contents, config=config
            )
        )
        return pump, translator.feed

    @property
    def _client(self) -> genai.Client:
        """The SDK client on our own aiohttp session, made in the running loop.

        The SDK's own session reads each response through a 4 MiB buffer and has no
        connection bound we can set; ours has ``max_connections`` (past it a request
        waits for a connection, bounded by the first-chunk timeout, then ends as
        ``upstream_timeout``) and aiohttp's 64 KiB read buffer.
        """
        if self._client_instance is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                read_bufsize=READ_BUFFER,
                trace_configs=[_turn_trace()],
            )
            self._client_instance = genai.Client(
                api_key=self._api_key,
                http_options=types.HttpOptions(
                    base_url=self._base_url,
                    api_version=API_VERSION,
                    retry_options=types.HttpRetryOptions(attempts=1),
                    aiohttp_client=self._session,
                ),
            )
        return self._client_instance

    async def aclose(self) -> None:
        """Close the client's HTTP session (call once at shutdown)."""
        if self._client_instance is not None:
            await self._client_instance.aio.aclose()
        if self._session is not None:
            await self._session.close()

    def backoff(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if isinstance(error, genai_errors.APIError):
            hinted = retry_delay_of(error)
            if hinted is not None:
                return min(max(hinted, 0.0), self.backoff_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)  # full jitter

    async def _attachment_parts(self, request: ModelRequest) -> dict[str, Any]:
        """The request's attachments as parts (uploading the large ones): none without."""
        if not request.attachment_data:
            return {}
        return await self._files.parts(self._client, request)

    def _config(self, request: ModelRequest) -> types.GenerateContentConfig:
        system = {"role": "user", "parts": [_text(request.system)]} if request.system else None
        return _Config(
            system_instruction=system,
            tools=[_tool(name) for name in request.tools] or None,
            max_output_tokens=request.max_output_tokens,
            automatic_function_calling=_NoAfc(disable=True),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield the answer's events, then one :class:`Final`; raise :class:`ModelError`."""
        config = self._config(request)
        contents = _contents(request, await self._attachment_parts(request))
        bound = log.bind(model=request.model)
        attempt = 0
        while True:
            translator = Translator(vertex=self.decoder == "wire" and self._wire.vertex)
            yielded = False
            pump, feed = self._open(request.model, contents, config, translator)
            self.open_streams += 1
            deadline = IdleDeadline()
            try:
                try:
                    timeout = self.first_chunk_timeout
                    while True:
                        deadline.arm(timeout)
                        try:
                            chunk = await pump.next()
                        except asyncio.CancelledError:
                            if not deadline.expired():
                                raise
                            which = "first chunk" if translator.chunks == 0 else "next chunk"
                            raise ModelError(
                                "upstream_timeout",
                                f"Gemini sent no {which} within {timeout:g} s",
                            ) from None
                        deadline.disarm()
                        if chunk is None:
                            break
                        timeout = self.chunk_timeout
                        for event in feed(chunk):
                            yielded = True
                            yield event
                        if translator.finish_reason in BLOCKED_FINISHES:
                            raise ModelError(
                                "blocked",
                                f"the answer was stopped ({translator.finish_reason})",
                            )
                finally:
                    deadline.close()
                    self.open_streams -= 1
                    await pump.close()
                if translator.chunks == 0:
                    raise ConnectionError("Gemini ended the stream without any chunk")
            except ModelError:
                raise
            except Exception as exc:
                code, retryable = classify(exc)
                if retryable and not yielded and attempt < self.max_retries:
                    attempt += 1
                    delay = self.backoff(attempt, exc)
                    bound.info(
                        "gemini.retry",
                        attempt=attempt,
                        code=code,
                        delay=round(delay, 3),
                        error=_describe(exc),
                    )
                    await asyncio.sleep(delay)
                    continue
                bound.warning(
                    "gemini.failed",
                    code=code,
                    attempts=attempt + 1,
                    after_events=yielded,
                    error=_describe(exc),
                )
                raise ModelError(code, _describe(exc)) from exc
            yield translator.final()
            return

    async def count_tokens(self, request: ModelRequest) -> int | None:
        """Prompt size by Gemini's ``countTokens``, or ``None`` on any failure.

        The Developer API rejects ``systemInstruction`` in ``countTokens``, so the
        system text is counted as a leading user turn (a few tokens more: conservative).
        """
        try:
            contents = _contents(request, await self._attachment_parts(request))
        except ModelError as exc:
            log.warning("gemini.count_tokens_failed", model=request.model, error=exc.message)
            return None
        if request.system:
            contents.insert(0, {"role": "user", "parts": [_text(request.system)]})
        try:
            async with asyncio.timeout(self.first_chunk_timeout):
                response = await self._client.aio.models.count_tokens(
                    model=request.model, contents=contents
                )
        except Exception as exc:
            log.warning("gemini.count_tokens_failed", model=request.model, error=_describe(exc))
            return None
        return response.total_tokens

    async def title(self, model: str, message: str, answer: str) -> str:
        """``TitleWriter``: one non-streaming ``generateContent`` (no retry: a title that
        fails keeps the provisional one), bounded by ``first_chunk_timeout``; the
        answer's text parts, thoughts left out. Raises :class:`ModelError`."""
        config = _Config(
            system_instruction={"role": "user", "parts": [_text(TITLE_INSTRUCTION)]},
            max_output_tokens=TITLE_MAX_TOKENS,
            automatic_function_calling=_NoAfc(disable=True),
        )
        contents: list[Any] = [
            {"role": "user", "parts": [_text(title_request_text(message, answer))]}
        ]
        try:
            async with asyncio.timeout(self.first_chunk_timeout):
                response = await self._client.aio.models.generate_content(
                    model=model, contents=contents, config=config
                )
        except Exception as exc:
            code, _ = classify(exc)
            raise ModelError(code, _describe(exc)) from exc
        candidates = response.candidates or []
        content = candidates[0].content if candidates else None
        parts = (content.parts if content is not None else None) or []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        if not text.strip():
            raise ModelError("blocked", "Gemini wrote no title")
        return text
