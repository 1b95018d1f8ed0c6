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
- ``--client wire`` / ``--client provider-sdk``: the server's own
  :class:`~actors.models.gemini.GeminiProvider` with ``decoder="wire"`` (aiohttp + orjson
  into the provider's events) or ``decoder="sdk"`` (google-genai's models), consuming
  every event: what the server's model side costs per chunk with each decoder.
- ``--client compare``: each of the four above in a fresh process of its own, in turn,
  ``--rounds`` times; one JSON object with every run and the ratios to ``raw`` (medians).

Run: ``python -m bench.sdk_cost --base-url http://127.0.0.1:8089 --client sdk --streams 200``;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
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

    elif args.client in ("wire", "provider-sdk"):
        from actors.models.base import ChatTurn, ModelRequest, TextDelta
        from actors.models.gemini import GeminiProvider

        provider = GeminiProvider(
            "x",
            base_url=args.base_url,
            decoder="wire" if args.client == "wire" else "sdk",
            max_retries=0,
            max_connections=args.streams + 10,
        )
        request = ModelRequest(
            model=MODEL, system="", contents=(ChatTurn("user", prompt(tokens, args.rate)),)
        )

        async def one(i: int) -> None:
            try:
                async for event in provider.stream(request):
                    if isinstance(event, TextDelta):
                        seen(event.text)
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
    if args.client in ("wire", "provider-sdk"):
        await provider.aclose()
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


CLIENTS = ("raw", "wire", "provider-sdk", "sdk")


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    """Every client in a fresh process, in turn, ``rounds`` times (a shared machine's
    load moves between runs: interleaving spreads it over all four)."""
    runs: dict[str, list[dict[str, Any]]] = {client: [] for client in CLIENTS}
    for _ in range(args.rounds):
        for client in CLIENTS:
            command = [sys.executable, "-m", "bench.sdk_cost", "--client", client]
            for name in ("base_url", "streams", "rate", "warmup", "duration"):
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[client].append(orjson.loads(out.strip().splitlines()[-1]))
    medians = {
        client: statistics.median(r["us_per_chunk"] for r in rows if r["us_per_chunk"])
        for client, rows in runs.items()
    }
    return {
        "streams": args.streams,
        "rate": args.rate,
        "rounds": args.rounds,
        "us_per_chunk_median": {c: round(v, 1) for c, v in medians.items()},
        "vs_raw": {c: round(v / medians["raw"], 2) for c, v in medians.items()},
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--client", choices=(*CLIENTS, "compare"), default="sdk")
    parser.add_argument("--rounds", type=int, default=3, help="compare: runs per client")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    raise_nofile()
    if args.client == "compare":
        sys.stdout.write(orjson.dumps(_compare(args)).decode() + "\n")
        return
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_measure(args))
    else:
        result = uvloop.run(_measure(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
