"""A local Gemini stand-in that speaks the wire format of GEMINI.md over real HTTP.

Tests drive the real google-genai SDK against it. Behaviour is scripted per request:
:meth:`FakeGemini.enqueue` a :class:`Script`; each streaming / generateContent request
consumes the head of the FIFO (a script with ``error_before`` answers that many
requests with HTTP errors first, then plays its stream); an empty queue plays
``default_script`` (a deterministic echo). Every request is recorded in ``.requests``.
A conversation-title request (its system instruction starts with ``Write a title``,
``actors/models/titles.py``) has a FIFO of its own (:meth:`FakeGemini.enqueue_title`),
so it never takes an answer's script; with it empty it gets the first message's first
five words in Title Case, quoted, with a full stop, as a model might write it
(:meth:`FakeGemini.title_of`).

Rate mode (benchmarks): ``Script(timed_tokens=N, tokens_per_second=T)`` streams N
tokens at T tokens/s; each token's text embeds its wall-clock send time as
``⟨1732550000.123456⟩ `` (see :func:`parse_ts`).

Run standalone: ``python -m standins.gemini --port 8089 --tokens 200 --rate 50``.

Why one module of ~430 lines: one fake service (scripts, the streaming and unary
answers, the benchmark's rate mode) checked as a whole against GEMINI.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from standins.gemini_files import FakeFiles, PartError

log = structlog.get_logger(__name__)

STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_TS = re.compile(r"⟨(\d+\.\d+)⟩")


def ts_token(ts: float | None = None) -> str:
    """The text of one rate-mode token: its send time, then a space."""
    return f"⟨{time.time() if ts is None else ts:.6f}⟩ "


def parse_ts(text: str) -> float | None:
    """The first send timestamp embedded in ``text`` (a rate-mode token), or ``None``."""
    match = _TS.search(text)
    return float(match.group(1)) if match else None


def parse_all_ts(text: str) -> list[float]:
    """Every send timestamp in ``text`` (merged tokens carry several)."""
    return [float(m) for m in _TS.findall(text)]


@dataclass
class HttpError:
    """An error answered the way Google does: status plus ``{"error": {...}}``."""

    code: int
    message: str = ""
    retry_delay: str | None = None  # e.g. "1s" → a google.rpc.RetryInfo detail

    def body(self) -> dict[str, object]:
        details: list[dict[str, object]] = []
        if self.retry_delay is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": self.retry_delay,
                }
            )
        return {
            "error": {
                "code": self.code,
                "message": self.message or f"fake error {self.code}",
                "status": STATUS_NAMES.get(self.code, "UNKNOWN"),
                "details": details,
            }
        }


def _as_error(value: int | HttpError) -> HttpError:
    return value if isinstance(value, HttpError) else HttpError(value)


@dataclass
class Script:
    """What the fake answers to one generation (see the module docstring).

    ``chunks`` items are answer texts or raw part dicts (``{"executableCode": ...}``,
    ``{"text": ..., "thought": True}``), one chunk each.
    """

    chunks: list[str | dict[str, Any]] = field(default_factory=lambda: ["Hello", " world", "!"])
    chunk_delay: float = 0.0
    error_before: list[int | HttpError] = field(default_factory=list)
    error_after_chunks: int | None = None  # mid-stream `data: {"error": ...}` after N chunks
    mid_stream_error: int | HttpError = 500
    stall_before_first: float = 0.0
    stall_after: int | None = None  # stall for stall_seconds after N chunks
    stall_seconds: float = 0.0
    finish_reason: str | None = "STOP"
    grounding: dict[str, Any] | None = None  # raw groundingMetadata (last chunk)
    #: Raw groundingMetadata on the first chunk (the search queries, as Gemini says them
    #: before the answer); ``grounding`` still comes with the last.
    grounding_first: dict[str, Any] | None = None
    url_context: dict[str, Any] | None = None  # raw urlContextMetadata (last chunk)
    usage: dict[str, int] | None = None  # final usageMetadata; computed when None
    block_reason: str | None = None  # promptFeedback.blockReason, no candidates
    timed_tokens: int | None = None  # rate mode: this many timestamped tokens
    tokens_per_second: float = 50.0
    drop_connection_after: int | None = None  # close the socket after N chunks
    #: After N chunks one event whose data is not JSON (``malformed``), then the stream
    #: goes on as scripted: a proxy or upstream that garbles a chunk mid-answer.
    malformed_after: int | None = None
    malformed: bytes = b'{"candidates": [{"content": {"parts": [{"text": "cut'
    #: After ``release_after`` chunks the stream waits until the test sets ``release``
    #: (same event loop): a stream held mid-answer for as long as the test needs. A unary
    #: ``generateContent`` waits for ``release`` before it answers at all.
    release_after: int | None = None
    release: asyncio.Event | None = None
    #: The whole streamed body, written verbatim piece by piece (status 200, every other
    #: field ignored): recorded or generated bodies for the decoders' differential test.
    raw: list[bytes] | None = None

    def parts(self) -> list[dict[str, Any]]:
        return [{"text": c} if isinstance(c, str) else dict(c) for c in self.chunks]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    received_at: float


def _text_of(contents: object) -> str:
    out: list[str] = []
    if isinstance(contents, list):
        for content in contents:
            if isinstance(content, Mapping):
                for part in content.get("parts") or ():
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        out.append(part["text"])
    return "".join(out)


def estimate_count(body: Mapping[str, Any]) -> int:
    """The fake's token count: characters / 4 over every text, rounded up."""
    text = _text_of(body.get("contents"))
    system = body.get("systemInstruction")
    if isinstance(system, Mapping):
        text += _text_of([system])
    return (len(text) + 3) // 4


class FakeGemini:
    """A scriptable Gemini-compatible HTTP server (see the module docstring)."""

    def __init__(
        self,
        *,
        default_script: Script | None = None,
        count_scale: float = 1.0,
        responder: Callable[[Mapping[str, Any]], Script] | None = None,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        self.scripts: deque[Script] = deque()
        #: What title requests get, in order (see the module docstring).
        self.title_scripts: deque[Script] = deque()
        self.default_script = default_script
        #: With an empty queue, the script for a request's body (the demo's answers,
        #: :mod:`standins.demo_answers`); before ``default_script`` and the echo.
        self.responder = responder
        #: countTokens answers ``estimate_count * count_scale`` (>1 simulates a tokenizer
        #: that counts more than our estimate).
        self.count_scale = count_scale
        #: Streams whose client went away before the stream ended.
        self.disconnects = 0
        self.completed_streams = 0
        self._errors_sent: dict[int, int] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        #: The Files API, and the check of attachment parts (:mod:`standins.gemini_files`).
        self.files = FakeFiles()

    # -- control ---------------------------------------------------------------------
    def enqueue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def enqueue_title(self, *scripts: Script) -> None:
        self.title_scripts.extend(scripts)

    def stream_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(":streamGenerateContent")]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(r"/{version:v1|v1beta}/models/{model}", self._dispatch)
        self.files.add_routes(app)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        self.files.base_url = self.base_url
        log.info("fake_gemini.started", base_url=self.base_url)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- HTTP ------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                received_at=time.monotonic(),
            )
        )
        model, _, verb = request.match_info["model"].partition(":")
        if not isinstance(body, dict):
            return self._error(HttpError(400, "Invalid JSON payload received."))
        try:
            self.files.check(body)  # inlineData and fileData parts as Gemini checks them
        except PartError as exc:
            return self._error(HttpError(400, str(exc)))
        if verb == "countTokens":
            if "systemInstruction" in body or "tools" in body:
                return self._error(
                    HttpError(400, "Invalid JSON payload: systemInstruction is not supported.")
                )
            return web.json_response({"totalTokens": int(estimate_count(body) * self.count_scale)})
        if verb not in ("streamGenerateContent", "generateContent"):
            return self._error(HttpError(404, f"Method {verb} not found."))
        script = self._next_script(body)
        if isinstance(script, HttpError):
            return self._error(script)
        if verb == "generateContent":
            if script.stall_before_first:
                await asyncio.sleep(script.stall_before_first)
            if script.release is not None:  # a unary answer waits for the test as a whole
                await script.release.wait()
            return web.json_response(self._whole_response(script, model, body))
        return await self._stream(request, script, model, body)

    def _next_script(self, body: Mapping[str, Any]) -> Script | HttpError:
        if self._asks_title(body):
            if not self.title_scripts:
                return Script(chunks=[self._title_answer(body)])
            return self._head(self.title_scripts)
        if not self.scripts:
            if self.responder is not None:
                return self.responder(body)
            return self.default_script or self._echo(body)
        return self._head(self.scripts)

    def _head(self, queue: deque[Script]) -> Script | HttpError:
        script = queue[0]
        sent = self._errors_sent.get(id(script), 0)
        if sent < len(script.error_before):
            self._errors_sent[id(script)] = sent + 1
            return _as_error(script.error_before[sent])
        queue.popleft()
        self._errors_sent.pop(id(script), None)
        return script

    @staticmethod
    def _asks_title(body: Mapping[str, Any]) -> bool:
        system = body.get("systemInstruction")
        return isinstance(system, Mapping) and _text_of([system]).startswith("Write a title")

    @staticmethod
    def title_of(message: str) -> str:
        """The title the fake's model gives a conversation that began with ``message``,
        as it would arrive once cleaned: its first five words in Title Case."""
        return " ".join(word.capitalize() for word in message.split()[:5])

    def _title_answer(self, body: Mapping[str, Any]) -> str:
        text = _text_of(body.get("contents"))
        message = text.removeprefix("First message:\n").partition("\n\nFirst answer:")[0]
        return f'"{self.title_of(message)}."\n'

    @staticmethod
    def _echo(body: Mapping[str, Any]) -> Script:
        contents = body.get("contents")
        last = _text_of(contents[-1:]) if isinstance(contents, list) else ""
        words = f"You said: {last}".split(" ")
        return Script(chunks=[w if i == 0 else f" {w}" for i, w in enumerate(words)])

    @staticmethod
    def _error(err: HttpError) -> web.Response:
        return web.json_response(err.body(), status=err.code)

    def _usage(self, script: Script, body: Mapping[str, Any], sent_text: str) -> dict[str, int]:
        if script.usage is not None:
            return dict(script.usage)
        prompt = estimate_count(body)
        out = (len(sent_text) + 3) // 4
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out,
            "totalTokenCount": prompt + out,
        }

    @staticmethod
    def _chunk(model: str, parts: list[dict[str, Any]], **candidate: Any) -> dict[str, Any]:
        cand: dict[str, Any] = {"index": 0, "content": {"role": "model", "parts": parts}}
        cand.update({k: v for k, v in candidate.items() if v is not None})
        return {"candidates": [cand], "modelVersion": model, "responseId": "resp-fake"}

    def _whole_response(self, script: Script, model: str, body: Mapping[str, Any]) -> Any:
        if script.block_reason is not None:
            return {
                "promptFeedback": {"blockReason": script.block_reason},
                "usageMetadata": self._usage(script, body, ""),
            }
        parts = script.parts()
        text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        chunk = self._chunk(
            model,
            parts,
            finishReason=script.finish_reason,
            groundingMetadata=script.grounding,
            urlContextMetadata=script.url_context,
        )
        chunk["usageMetadata"] = self._usage(script, body, text)
        return chunk

    async def _stream(
        self, request: web.Request, script: Script, model: str, body: Mapping[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(obj: Mapping[str, Any]) -> None:
            await response.write(b"data: " + json.dumps(obj).encode() + b"\r\n\r\n")

        try:
            if script.raw is not None:
                for piece in script.raw:
                    await response.write(piece)
                await response.write_eof()
                self.completed_streams += 1
                return response
            if script.stall_before_first:
                await asyncio.sleep(script.stall_before_first)
            if script.block_reason is not None:
                await send(
                    {
                        "promptFeedback": {"blockReason": script.block_reason},
                        "usageMetadata": self._usage(script, body, ""),
                    }
                )
                self.completed_streams += 1
                return response
            if script.timed_tokens is not None:
                chunks: Sequence[dict[str, Any] | None] = [None] * script.timed_tokens
                delay = 1.0 / script.tokens_per_second
            else:
                chunks = script.parts()
                delay = script.chunk_delay
            sent_text = ""
            total = len(chunks)
            started = time.monotonic()
            for i, part in enumerate(chunks):
                if i and script.timed_tokens is not None:
                    # Absolute schedule: the rate does not drift with write latency.
                    await asyncio.sleep(max(0.0, started + i * delay - time.monotonic()))
                elif i and delay:
                    await asyncio.sleep(delay)
                if script.error_after_chunks is not None and i == script.error_after_chunks:
                    await send(_as_error(script.mid_stream_error).body())
                    self.completed_streams += 1
                    return response
                if script.drop_connection_after is not None and i == script.drop_connection_after:
                    transport = request.transport
                    if transport is not None:
                        transport.close()
                    return response
                if script.stall_after is not None and i == script.stall_after:
                    await asyncio.sleep(script.stall_seconds)
                if script.malformed_after is not None and i == script.malformed_after:
                    await response.write(b"data: " + script.malformed + b"\r\n\r\n")
                if script.release is not None and i == script.release_after:
                    await script.release.wait()
                if part is None:
                    part = {"text": ts_token()}
                if not part.get("thought") and isinstance(part.get("text"), str):
                    sent_text += part["text"]
                last = i == total - 1
                grounding = script.grounding if last else None
                if i == 0 and script.grounding_first is not None and not last:
                    grounding = script.grounding_first
                chunk = self._chunk(
                    model,
                    [part],
                    finishReason=script.finish_reason if last else None,
                    groundingMetadata=grounding,
                    urlContextMetadata=script.url_context if last else None,
                )
                usage = self._usage(script, body, sent_text)
                if not last and script.usage is None:
                    usage = {
                        "promptTokenCount": usage["promptTokenCount"],
                        "totalTokenCount": usage["promptTokenCount"],
                    }
                chunk["usageMetadata"] = usage
                await send(chunk)
            if total == 0:
                await send(self._chunk(model, [{"text": ""}], finishReason=script.finish_reason))
            if script.error_after_chunks is not None and script.error_after_chunks >= total:
                await send(_as_error(script.mid_stream_error).body())
            await response.write_eof()
            self.completed_streams += 1
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            log.info("fake_gemini.client_gone", path=request.path)
            raise
        return response


async def _serve(host: str, port: int, tokens: int, rate: float) -> None:
    fake = FakeGemini(default_script=Script(timed_tokens=tokens, tokens_per_second=rate))
    base_url = await fake.start(host=host, port=port)
    log.info(
        "fake_gemini.ready",
        base_url=base_url,
        tokens=tokens,
        rate=rate,
        hint="set CERO_GEMINI_BASE_URL to base_url and any API key",
    )
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Gemini stand-in (rate mode).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.port, args.tokens, args.rate))
    except KeyboardInterrupt:
        log.info("fake_gemini.stopped")


if __name__ == "__main__":
    main()
