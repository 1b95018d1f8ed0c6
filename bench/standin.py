"""The Gemini stand-in for benchmarks: ``standins.gemini`` in rate mode, per request.

Each streaming request's prompt says what to play: ``bench:tokens=N:rate=R:tag=T``
(``R = 0``: as fast as possible), so one stand-in process serves every scenario. The
arrival time of each tagged request is kept (``GET /bench/arrival/{tag}``) so that scenario
4 can subtract the stand-in's own first-chunk delay exactly.

``POST /bench/finish`` ends every rate-mode stream open at that moment: each sends its
next token as the last one (``finishReason: STOP``), so a benchmark can ask for long
answers and still have every one of them end ``complete`` right after its window,
however long starting them took.

``GET /bench/stats`` returns running counters (the benchmark takes their difference over a
window): requests and their body bytes, chunks and bytes streamed, and how many chunks were
written while the connection's write buffer was empty (each of those goes to the socket in
a send of its own, i.e. the reader keeps up chunk by chunk).

Run: ``python -m bench.standin --port 8089``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import re
import signal
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from standins.gemini import (
    FakeGemini,
    HttpError,
    Script,
    _text_of,
    estimate_count,
    ts_token,
)

_SPEC = re.compile(r"bench:tokens=(\d+):rate=([0-9.e+]+):tag=([\w-]+)")
_ARRIVAL: contextvars.ContextVar[float] = contextvars.ContextVar("arrival", default=0.0)
#: "As fast as possible": the fake sleeps ``max(0, ...)`` per token, i.e. it only yields.
FAST_RATE = 1e9


class BenchGemini(FakeGemini):
    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, float] = {}
        #: Streams opened before this wall time end at their next token (``/bench/finish``).
        self.finish_at = 0.0
        #: Rate-mode streams being written now.
        self.open = 0
        #: Running counters (``GET /bench/stats``).
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "request_bytes",
                "request_bytes_max",
                "streams",
                "chunks",
                "chunk_bytes",
                "chunks_to_empty_buffer",
            ),
            0,
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        _ARRIVAL.set(time.time())
        size = request.content_length or 0
        stats = self.stats
        stats["requests"] += 1
        stats["request_bytes"] += size
        stats["request_bytes_max"] = max(stats["request_bytes_max"], size)
        return await super()._dispatch(request)

    def _next_script(self, body: Mapping[str, Any]) -> Script | HttpError:
        self.requests.clear()  # nothing reads them here; keep memory flat
        contents = body.get("contents")
        last = _text_of(contents[-1:]) if isinstance(contents, list) else ""
        match = _SPEC.search(last)
        if match is None:
            return Script(chunks=["ok"])
        tokens, rate, tag = int(match.group(1)), float(match.group(2)), match.group(3)
        if tag != "-":
            self.arrivals[tag] = _ARRIVAL.get()
        return Script(timed_tokens=tokens, tokens_per_second=rate if rate > 0 else FAST_RATE)

    async def _stream(
        self, request: web.Request, script: Script, model: str, body: Mapping[str, Any]
    ) -> web.StreamResponse:
        """Rate mode as :class:`FakeGemini` plays it (same chunks, same absolute schedule),
        plus the early end asked for by ``POST /bench/finish``."""
        if not script.timed_tokens:
            return await super()._stream(request, script, model, body)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        opened = time.time()
        self.stats["streams"] += 1
        delay = 1.0 / script.tokens_per_second
        started = time.monotonic()
        self.open += 1
        try:
            await self._play(
                response,
                request.transport,
                model,
                script.timed_tokens,
                delay,
                estimate_count(body),
                opened,
                started,
            )
        finally:
            self.open -= 1
        return response

    async def _play(
        self,
        response: web.StreamResponse,
        transport: asyncio.Transport | None,
        model: str,
        total: int,
        delay: float,
        prompt_tokens: int,
        opened: float,
        started: float,
    ) -> None:
        stats = self.stats
        chars = 0
        for i in range(total):
            if i:
                await asyncio.sleep(max(0.0, started + i * delay - time.monotonic()))
            text = ts_token()
            chars += len(text)
            last = i == total - 1 or opened < self.finish_at <= time.time()
            chunk = self._chunk(model, [{"text": text}], finishReason="STOP" if last else None)
            if last:
                out = (chars + 3) // 4
                usage = {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": out,
                    "totalTokenCount": prompt_tokens + out,
                }
            else:
                usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
            chunk["usageMetadata"] = usage
            data = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            stats["chunks"] += 1
            stats["chunk_bytes"] += len(data)
            if transport is not None and not transport.get_write_buffer_size():
                stats["chunks_to_empty_buffer"] += 1
            await response.write(data)
            if last:
                break
        await response.write_eof()

    async def _finish(self, request: web.Request) -> web.Response:
        self.finish_at = time.time()
        return web.json_response({"finish_at": self.finish_at})

    async def _stats(self, request: web.Request) -> web.Response:
        # finish_at and the rate-mode streams still open: a stall snapshot's evidence.
        return web.json_response(
            {**self.stats, "finish_at": self.finish_at, "now": time.time(), "open": self.open}
        )

    async def _arrival(self, request: web.Request) -> web.Response:
        return web.json_response({"arrival": self.arrivals.get(request.match_info["tag"])})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(r"/{version:v1|v1beta}/models/{model}", self._dispatch)
        app.router.add_get("/bench/arrival/{tag}", self._arrival)
        app.router.add_post("/bench/finish", self._finish)
        app.router.add_get("/bench/stats", self._stats)
        app.router.add_get("/healthz", lambda _: _ok())
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=1024).start()
        self.base_url = f"http://{host}:{port}"
        return self.base_url


async def _ok() -> web.Response:
    return web.json_response({"status": "ok"})


async def _serve(port: int) -> None:
    fake = BenchGemini()
    await fake.start(port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
