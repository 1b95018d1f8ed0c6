"""CPU per streamed chunk of a bare client process: the google-genai SDK, or raw aiohttp.

The floor under the server's "CPU per streamed token" (scenario 2, cost row): one process
opens ``--streams`` concurrent streams from the bench stand-in at ``--rate`` tokens/s each
and consumes them, nothing else; its own process CPU time (all threads, ``time.process_time``)
over the window ``[t0, t0 + duration)`` divided by the chunks received in that window.

- ``--client sdk``: ``genai.Client(api_key="x", http_options=types.HttpOptions(base_url=<stand-in>,
  api_version="v1beta"))`` and ``client.aio.models.generate_content_stream(...)``, touching
  ``chunk.text`` of every chunk (the SDK's defaults: its own aiohttp session).
- ``--client raw``: aiohttp + orjson on the same ``streamGenerateContent?alt=sse`` stream
  (:func:`bench.source.stream_texts`): what parsing the stream costs without the SDK.

Run: ``python -m bench.sdk_cost --base-url http://127.0.0.1:8089 --client sdk --streams 200``;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from bench.common import MODEL, prompt, raise_nofile


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    tokens = int(args.rate * (args.warmup + args.duration + 3)) + 10
    measuring = [False]  # chunks are counted between the two CPU readings exactly
    counts = {"chunks": 0, "chunks_all": 0, "errors": 0, "chars": 0}

    def seen(text: str | None) -> None:
        counts["chunks_all"] += 1
        if measuring[0]:
            counts["chunks"] += 1
            counts["chars"] += len(text or "")

    session: aiohttp.ClientSession | None = None
    if args.client == "sdk":
        from google import genai
        from google.genai import types

        client = genai.Client(
            api_key="x",
            http_options=types.HttpOptions(base_url=args.base_url, api_version="v1beta"),
        )

        async def one(i: int) -> None:
            try:
                stream = await client.aio.models.generate_content_stream(
                    model=MODEL, contents=prompt(tokens, args.rate)
                )
                async for chunk in stream:
                    seen(chunk.text)
            except Exception:
                counts["errors"] += 1

    else:
        from bench.source import stream_texts

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def one(i: int) -> None:
            assert session is not None
            try:
                async for text in stream_texts(session, args.base_url, tokens, args.rate):
                    seen(text)
            except Exception:
                counts["errors"] += 1

    tasks = [asyncio.ensure_future(one(i)) for i in range(args.streams)]
    await asyncio.sleep(args.warmup)
    measuring[0] = True
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.duration)
    measuring[0] = False
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()
    chunks = counts["chunks"]
    return {
        "client": args.client,
        "streams": args.streams,
        "rate": args.rate,
        "window_s": round(wall, 2),
        "chunks": chunks,
        "chunks_per_s": round(chunks / max(wall, 1e-9), 1),
        "sent_per_s": round(args.streams * args.rate, 1),
        "cpu_s": round(cpu, 4),
        "cpu_pct": round(100 * cpu / max(wall, 1e-9), 1),
        "us_per_chunk": round(1e6 * cpu / chunks, 2) if chunks else None,
        "errors": counts["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--client", choices=("sdk", "raw"), default="sdk")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_measure(args))
    else:
        result = uvloop.run(_measure(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
