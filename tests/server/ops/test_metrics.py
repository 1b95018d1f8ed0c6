"""The operator's metrics move when the server does what they count.

Real turns through the Gemini stand-in (the real google-genai SDK over HTTP), real
clients, and ``/metrics`` scraped before and after: each test fails when its metric is not
incremented.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import new_conversation, post_chat, read_ndjson, read_sse
from tests.process_stats import METRICS_AUTH

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"

Env = tuple[Live, FakeGemini, str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with live_with_gemini(
        database_url,
        gemini_first_chunk_timeout=0.5,
        gemini_chunk_timeout=0.5,
        flush_interval=0.02,
        device_code_limit=1,
    ) as (live, fake):
        token, _ = await make_user_session("Metrics")
        yield live, fake, token


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(live: Live) -> Samples:
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/metrics", headers=METRICS_AUTH) as r:
            text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def chat(live: Live, token: str, *, sse: bool = False, **body: object) -> list[str]:
    """One chat turn; the topics (NDJSON) or event names (SSE) it streamed."""
    headers = {"Accept": "text/event-stream"} if sse else {}
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, live.url, token, headers=headers, **body) as r:
            assert r.status == 200, await r.text()
            if sse:
                return [event.event async for event in read_sse(r)]
            return [line["topic"] for line in await read_ndjson(r)]


async def test_one_chat_moves_the_turn_metrics(env: Env) -> None:
    live, fake, token = env
    # Paced so that the flusher writes the partial answer at least once.
    fake.enqueue(Script(chunks=["One", " two", " three"], chunk_delay=0.05))
    before = await scrape(live)
    topics = await chat(live, token, message="count me", aiModel=MODEL)
    assert topics[-1] == "done"
    after = await scrape(live)
    ndjson, gemini = {"transport": "ndjson"}, {"provider": "gemini"}
    assert moved(before, after, "cero_time_to_first_token_seconds_count", **ndjson) == 1
    assert moved(before, after, "cero_time_to_first_token_seconds_sum", **ndjson) > 0
    assert moved(before, after, "cero_model_first_event_seconds_count", **gemini) == 1
    assert moved(before, after, "cero_model_stream_seconds_count", **gemini) == 1
    # The stream lasted at least its paced chunks.
    assert moved(before, after, "cero_model_stream_seconds_sum", **gemini) >= 0.1
    assert moved(before, after, "cero_generations_total", outcome="complete", code="") == 1
    assert moved(before, after, "cero_tokens_streamed_total") == 3
    assert moved(before, after, "cero_flush_seconds_count") >= 1
    assert moved(before, after, "cero_db_write_seconds_count") >= 2  # turn start, finish
    assert moved(before, after, "cero_db_write_batches_total") >= 2
    # NDJSON responses are written by their pump: the queued path.
    assert moved(before, after, "cero_delivery_lag_seconds_count", path="queued") >= 1
    assert value(after, "cero_db_write_failures_total") == 0
    assert value(after, "cero_flush_failures_total") == 0


async def test_sse_chat_counts_its_transport_and_direct_delivery(env: Env) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=["a", "b", "c"], chunk_delay=0.02))
    before = await scrape(live)
    events = await chat(live, token, sse=True, message="sse", aiModel=MODEL)
    assert events[-1] == "done"
    after = await scrape(live)
    assert moved(before, after, "cero_time_to_first_token_seconds_count", transport="sse") == 1
    # Tokens published while the response keeps up leave in the pass's coalesced write.
    assert moved(before, after, "cero_delivery_lag_seconds_count", path="direct") >= 1


async def test_websocket_send_counts_its_time_to_first_token(env: Env) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=["w", "s"], chunk_delay=0.02))
    before = await scrape(live)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token))
        await ws.send_str(
            orjson.dumps({"type": "send", "message": "ws", "aiModel": MODEL}).decode()
        )
        while (frame := orjson.loads((await ws.receive(timeout=10)).data))["type"] != "done":
            assert frame["type"] not in ("error", "fault"), frame
        await ws.close()
    after = await scrape(live)
    ws_ttft = {"transport": "ws"}
    assert moved(before, after, "cero_time_to_first_token_seconds_count", **ws_ttft) == 1
    assert moved(before, after, "cero_time_to_first_token_seconds_sum", **ws_ttft) > 0
    # Its phases are the turn's too (the actor's, from the mailbox to the first token).
    assert moved(before, after, "cero_turn_phase_seconds_count", phase="first_token") == 1


async def test_cancelled_generation_counts_cancelled(env: Env) -> None:
    live, fake, token = env
    release = asyncio.Event()
    fake.enqueue(Script(chunks=["held", " never"], release_after=1, release=release))
    before = await scrape(live)
    async with aiohttp.ClientSession() as http:
        async with post_chat(http, live.url, token, message="cancel me", aiModel=MODEL) as r:
            first = orjson.loads(await r.content.readline())
            conversation_id = first["data"]["conversationId"]
            # Cancelled once the first token is here, so the stand-in has taken this
            # script: a cancel before the model request left it queued, and the next
            # test's chat streamed it instead of its own (seen under load).
            while orjson.loads(await r.content.readline())["topic"] != "token":
                pass
            async with http.post(
                f"{live.url}/api/conversations/{conversation_id}/cancel",
                json={},
                headers=bearer(token),
            ) as c:
                assert c.status == 200 and (await c.json())["cancelled"] is True
            lines = await read_ndjson(r)
    release.set()
    assert lines[-1]["topic"] == "cancelled"
    after = await scrape(live)
    assert moved(before, after, "cero_generations_total", outcome="cancelled", code="") == 1
    assert moved(before, after, "cero_generations_total", outcome="complete", code="") == 0


async def test_failed_generation_counts_error_and_code(env: Env) -> None:
    live, fake, token = env
    fake.enqueue(Script(chunks=["a", "b", "c"], stall_after=1, stall_seconds=5))
    before = await scrape(live)
    topics = await chat(live, token, message="stall", aiModel=MODEL)
    assert topics[-1] == "error"
    after = await scrape(live)
    timeout = {"outcome": "error", "code": "upstream_timeout"}
    assert moved(before, after, "cero_generations_total", **timeout) == 1
    # The stream opened and then failed: its duration is observed all the same.
    assert moved(before, after, "cero_model_stream_seconds_count", provider="gemini") == 1


async def test_device_code_429_is_counted(env: Env) -> None:
    live, _, _ = env
    before = await scrape(live)
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # CERO_DEVICE_CODE_LIMIT=1
            async with http.post(
                live.url + "/api/auth/device/code", json={"client_id": "cero-cli"}
            ) as r:
                statuses.append(r.status)
    assert statuses == [200, 429]
    after = await scrape(live)
    assert moved(before, after, "cero_limit_refusals_total", limit="device_codes") == 1


async def test_slow_sse_subscriber_reset_is_counted(env: Env) -> None:
    live, fake, token = env
    async with aiohttp.ClientSession() as http:
        conversation_id = await new_conversation(http, live.url, token)
    loop = asyncio.get_running_loop()
    # The slow subscriber: a tiny receive buffer, and it stops reading after the head.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", live.server.port))
        auth = bearer(token)["Authorization"]
        await loop.sock_sendall(
            sock,
            (
                f"GET /api/conversations/{conversation_id}/events HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode(),
        )
        head = await loop.sock_recv(sock, 4096)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        before = await scrape(live)
        chunk = "y" * 4000  # 8 MB in all: far past the subscriber's bound (1 MiB)
        fake.enqueue(Script(chunks=[f"{i:04d}{chunk}" for i in range(2000)], chunk_delay=0))
        async with aiohttp.ClientSession() as http:
            async with post_chat(
                http,
                live.url,
                token,
                message="flood",
                aiModel=MODEL,
                conversationId=conversation_id,
            ) as r:
                body = await r.read()  # its last line (`done`) holds the 8 MB answer
        assert b'"topic":"done"' in body.rstrip().rsplit(b"\n", 1)[-1]
        # The reset is written once the peer reads again.
        received = bytearray()
        async with asyncio.timeout(30):
            while b"event: reset" not in received:
                data = await loop.sock_recv(sock, 1 << 20)
                assert data, "the stream ended without a reset"
                received.extend(data)
        # Counted as it is written: it is already in the next scrape.
        after = await scrape(live)
    finally:
        sock.close()
    assert moved(before, after, "cero_slow_consumer_resets_total", transport="sse") == 1
