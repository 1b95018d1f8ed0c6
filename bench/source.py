"""The token source of the bare baselines: the same stand-in the server streams from.

A baseline reads the stand-in's ``streamGenerateContent?alt=sse`` answer with a plain
aiohttp client (no SDK) and yields each chunk's text, so the baseline pays for the same
upstream hop as the project, minus the project's own parsing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from bench.common import MODEL, prompt


async def stream_texts(
    session: aiohttp.ClientSession, base_url: str, tokens: int, rate: float, tag: str = "-"
) -> AsyncIterator[str]:
    url = f"{base_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": prompt(tokens, rate, tag)}]}]}
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            chunk = orjson.loads(line[6:])
            for candidate in chunk.get("candidates") or ():
                for part in (candidate.get("content") or {}).get("parts") or ():
                    text = part.get("text")
                    if text:
                        yield text


def token_json(room: str, seq: int, text: str) -> bytes:
    """A frame shaped (and sized) like the project's ``token`` event."""
    return orjson.dumps(
        {
            "type": "token",
            "conversationId": room,
            "epoch": "bEnChEpOcH00",
            "seq": seq,
            "messageId": "bench-message-id-0000000",
            "text": text,
        }
    )
