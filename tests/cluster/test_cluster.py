"""Cluster mode: several real server processes on one Redis and one PostgreSQL behave as one.

Real processes on loopback (``tests/server_process.py``, through
``tests/cluster_harness.py``), the shared Redis under a key prefix of each test's own, a
fresh PostgreSQL database for the module, the offline demo model or the local Gemini
stand-in; short leases (``CERO_LEASE_TTL=2``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as redis

from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests import cluster_harness
from tests.auth_helpers import bearer, make_user_session
from tests.cluster_harness import (
    REDIS_URL,
    Cluster,
    PrivateRedis,
    lease_owner,
)
from tests.conditions import until
from tests.live_clients import WsPeer, chat_result, check_seq, post_chat, read_sse, token_text
from tests.process_stats import METRICS_AUTH, scrape, total
from tests.server_process import ServerProcess

pg_url = cluster_harness.pg_url  # the module's PostgreSQL database (a fixture)
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.postgres]

LEASE_TTL = 2.0
GEMINI = "gemini-2.5-flash-lite"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gemini() -> AsyncIterator[tuple[FakeGemini, str]]:
    fake = FakeGemini()
    url = await fake.start()
    try:
        yield fake, url
    finally:
        await fake.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(
    pg_url: str, gemini: tuple[FakeGemini, str], tmp_path: Path
) -> AsyncIterator[Cluster]:
    gemini[0].scripts.clear()  # a script an earlier test left unplayed plays for none here
    running = Cluster(
        pg_url,
        tmp_path,
        {
            "CERO_LEASE_TTL": str(LEASE_TTL),
            "CERO_DEMO_TOKEN_DELAY": "0.05",
            "CERO_FLUSH_INTERVAL": "0.2",
            "GEMINI_API_KEY": "test-key",
            "CERO_GEMINI_BASE_URL": gemini[1],
        },
    )
    try:
        yield running
    finally:
        await running.stop()


async def chat(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    token: str,
    message: str,
    conversation_id: str | None = None,
    model: str = "demo",
    **extra: Any,
) -> tuple[int, list[dict[str, Any]]]:
    body: dict[str, Any] = {"message": message, "aiModel": model, **extra}
    if conversation_id is not None:
        body["conversationId"] = conversation_id
    return await chat_result(http, server.url, token, **body)


async def warm_up(http: aiohttp.ClientSession, owner: ServerProcess, token: str) -> str:
    """A new conversation answered once through ``owner`` (a Gemini answer: the stand-in's
    next script), which then holds its lease; its id."""
    status, lines = await chat(http, owner, token, "warm up", model=GEMINI)
    assert status == 200, lines
    return str(lines[0]["data"]["conversationId"])


async def watch(
    http: aiohttp.ClientSession, server: ServerProcess, token: str, conversation_id: str
) -> WsPeer:
    """A WebSocket on ``server`` subscribed to ``conversation_id``."""
    ws = WsPeer(await http.ws_connect(server.ws_url, headers=bearer(token))).start()
    await ws.send(type="subscribe", conversationId=conversation_id)
    await ws.wait_for(lambda f: f["type"] == "subscribed")
    return ws


def of_topic(lines: list[dict[str, Any]], topic: str) -> dict[str, Any]:
    return next(line["data"] for line in lines if line["topic"] == topic)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def metric_or_zero(text: str, name: str) -> float:
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " ")), 0.0)


async def streaming_row() -> dict[str, Any] | None:
    """A message row still streaming (any), or None."""
    row: dict[str, Any] | None = (
        await Message.select().where(Message.status == "streaming").first().run()
    )
    return row


async def streaming() -> bool:
    return await streaming_row() is not None


def lease_released(cluster: Cluster, conversation_id: str) -> Callable[[], Awaitable[bool]]:
    """A condition: no process holds ``conversation_id``'s lease."""

    async def released() -> bool:
        return await lease_owner(cluster.prefix, conversation_id) is None

    return released


def generated_on(server: ServerProcess, generation_id: str) -> bool:
    return any(
        "generation_finished" in line and generation_id in line
        for line in server.log().splitlines()
    )


async def test_two_processes_watch_one_answer(cluster: Cluster) -> None:
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Two")
    async with aiohttp.ClientSession() as http:
        status, lines = await chat(http, a, token, "first turn")
        assert status == 200, lines
        conversation_id = lines[0]["data"]["conversationId"]

        ws = WsPeer(await http.ws_connect(b.ws_url, headers=bearer(token))).start()
        await ws.send(type="subscribe", conversationId=conversation_id)
        await ws.wait_for(lambda f: f["type"] == "subscribed")
        sse_events: list[dict[str, Any]] = []
        sse_ready = asyncio.Event()

        async def read_a() -> None:
            async with http.get(
                f"{a.url}/api/conversations/{conversation_id}/events", headers=bearer(token)
            ) as resp:
                assert resp.status == 200
                sse_ready.set()
                async for event in read_sse(resp):
                    sse_events.append(event.data)
                    if event.data["type"] == "done":
                        return

        reader = asyncio.create_task(read_a())
        await asyncio.wait_for(sse_ready.wait(), 10)
        sending = asyncio.create_task(
            chat(http, a, token, "second turn, watched from two processes", conversation_id)
        )
        # While it streams on A, B's messages show the live text (from B's copy of the log).
        first = await ws.wait_for(lambda f: f["type"] == "init", timeout=10)
        mid = first["messageId"]

        def five_tokens(_frame: dict[str, Any]) -> bool:
            return sum(1 for f in ws.frames if f["type"] == "token" and f["messageId"] == mid) >= 5

        await ws.wait_for(five_tokens, timeout=10)
        seen = token_text(ws.of(conversation_id), first["messageId"])
        async with http.get(
            f"{b.url}/api/conversations/{conversation_id}/messages", headers=bearer(token)
        ) as r:
            listed = (await r.json())["messages"][-1]
        assert listed["id"] == first["messageId"]
        if listed["status"] == "streaming":
            assert listed["content"].startswith(seen) and len(seen) > 0, (listed, seen)
        status, lines = await sending
        assert status == 200, lines
        done = of_topic(lines, "done")
        init = of_topic(lines, "init")
        await asyncio.wait_for(reader, 15)
        generation_id = init["generationId"]
        await ws.wait_for(lambda f: f["type"] == "done" and f["generationId"] == generation_id)
        ws_events = ws.of(conversation_id)
        await ws.close()
        async with http.get(f"{a.url}/metrics", headers=METRICS_AUTH) as r:
            a_metrics = await r.text()
        async with http.get(f"{b.url}/metrics", headers=METRICS_AUTH) as r:
            b_metrics = await r.text()
    assert metric(a_metrics, "cero_cluster_log_appends_total") >= len(ws_events)
    assert metric(a_metrics, "cero_cluster_log_pipelines_total") >= 1
    assert metric(b_metrics, "cero_cluster_relayed_events_total") >= len(ws_events)
    assert metric(b_metrics, "cero_cluster_relay_lag_seconds_count") >= 1
    assert metric(a_metrics, "cero_cluster_leases_taken_total") >= 1

    for events in (ws_events, sse_events):
        check_seq(events)
        kinds = [e["type"] for e in events if e["type"] != "presence"]
        assert kinds[0] == "message" and kinds[1] == "init" and kinds[-1] == "done", kinds
        assert token_text(events, init["messageId"]) == done["fullText"]
    # The same log on both processes: same epoch and seq for every event.
    ws_log = [(e["epoch"], e["seq"], e["type"]) for e in ws_events if e["type"] != "presence"]
    sse_log = [(e["epoch"], e["seq"], e["type"]) for e in sse_events if e["type"] != "presence"]
    assert ws_log == sse_log
    row = await Message.select().where(Message.id == init["messageId"]).first().run()
    assert row is not None
    assert row["status"] == "complete"
    assert row["content"] == done["fullText"]
    assert row["fence"] > 0


async def test_send_through_b_runs_on_owner_a(cluster: Cluster) -> None:
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Forward")
    async with aiohttp.ClientSession() as http:
        # A long first answer through A keeps A's lease while B is asked.
        first = asyncio.create_task(chat(http, a, token, "one " * 30))
        await until(streaming, what="an answer streaming on A")
        status, lines = await first
        assert status == 200, lines
        conversation_id = lines[0]["data"]["conversationId"]
        owner = await lease_owner(cluster.prefix, conversation_id)
        assert owner is not None  # A still holds it (ttl 2 s, renewed while its actor lives)
        status, lines = await chat(http, b, token, "through B", conversation_id)
        assert status == 200, lines
        generation_id = of_topic(lines, "init")["generationId"]
        assert of_topic(lines, "done")["fullText"]
        # The log line is written by a thread of its own: it may follow the answer's end.
        await until(lambda: generated_on(a, generation_id), what="the owner A generated it")
        assert not generated_on(b, generation_id)
        assert await lease_owner(cluster.prefix, conversation_id) == owner

        # Concurrent sends through A and B: one generation, one 409.
        results = await asyncio.gather(
            chat(http, a, token, "race from A", conversation_id),
            chat(http, b, token, "race from B", conversation_id),
        )
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 409], results
        loser = next(lines for status, lines in results if status == 409)
        assert loser[0]["code"] == "conversation_busy"

        # The same clientMessageId through the other process: the same generation.
        status, lines = await chat(http, a, token, "keyed", conversation_id, clientMessageId="k-1")
        assert status == 200, lines
        status, again = await chat(http, b, token, "keyed", conversation_id, clientMessageId="k-1")
        assert status == 200, again
        assert of_topic(again, "init")["generationId"] == of_topic(lines, "init")["generationId"]

        # A WebSocket send through B: acknowledged, generated by A, streamed on B's socket.
        ws = WsPeer(await http.ws_connect(b.ws_url, headers=bearer(token))).start()
        await ws.send(
            type="send", conversationId=conversation_id, message="ws through B", aiModel="demo"
        )
        ack = await ws.wait_for(lambda f: f["type"] == "ack" and f.get("of") == "send")
        gid = ack["generationId"]
        done = await ws.wait_for(lambda f: f["type"] == "done" and f["generationId"] == gid)
        await until(lambda: generated_on(a, gid), what="generated on A")
        assert not generated_on(b, gid)
        events = ws.of(conversation_id)
        check_seq(events)
        assert events[0]["type"] == "message"
        assert token_text(events, ack["messageId"]) == done["fullText"]
        await ws.close()


async def _watch_account(
    http: aiohttp.ClientSession, server: ServerProcess, token: str, after: str | None = None
) -> tuple[WsPeer, dict[str, Any]]:
    """A WebSocket on ``server`` following the user's account channel."""
    ws = WsPeer(await http.ws_connect(server.ws_url, headers=bearer(token))).start()
    frame: dict[str, Any] = {"type": "subscribe", "channel": "account"}
    if after is not None:
        frame["after"] = after
    await ws.send(**frame)
    return ws, await ws.wait_for(lambda f: f["type"] == "subscribed")


def _account(ws: WsPeer) -> list[dict[str, Any]]:
    return [
        f for f in ws.frames if f.get("channel") == "account" and f["type"] not in ("subscribed",)
    ]


async def test_account_channel_spans_processes(cluster: Cluster) -> None:
    """A chat and a rename through A reach a device following the account on B, and one on
    A, as the same events (same epoch and seqs); a device resumes its cursor on the other
    process without a gap or a duplicate (docs/api.md, Account channel)."""
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Account across")
    async with aiohttp.ClientSession() as http:
        on_b, subscribed = await _watch_account(http, b, token)
        on_a, _ = await _watch_account(http, a, token)
        status, lines = await chat(http, a, token, "plan a trip to Lisbon")
        assert status == 200, lines
        cid = of_topic(lines, "init")["conversationId"]
        async with http.patch(
            f"{a.url}/api/conversations/{cid}", json={"shortTitle": "Lisbon"}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200

        def lisbon(f: dict[str, Any]) -> bool:
            renamed = f["type"] == "conversation.renamed"
            return renamed and bool(f["conversation"]["shortTitle"] == "Lisbon")

        for ws in (on_a, on_b):
            await ws.wait_for(lisbon)
        # Up to our rename (the generated title's own rename may come before or after it).
        seen_b = _account(on_b)
        seen_b = seen_b[: next(i for i, e in enumerate(seen_b) if lisbon(e)) + 1]
        kinds = [e["type"] for e in seen_b]
        assert kinds[:3] == ["conversation.created", "answer.started", "answer.ended"], kinds
        assert seen_b[0]["seq"] == subscribed["seq"] + 1
        for before, after in itertools.pairwise(seen_b):
            assert after["seq"] == before["seq"] + 1 and after["epoch"] == before["epoch"]
        # One log, numbered alike on every process.
        assert _account(on_a)[: len(seen_b)] == seen_b
        assert all(e["conversationId"] == cid for e in seen_b)

        # A device that followed on B resumes on A from the cursor of its second event.
        cursor = f"{seen_b[1]['epoch']}:{seen_b[1]['seq']}"
        await on_b.close()
        again, resumed = await _watch_account(http, a, token, after=cursor)
        assert resumed["recovered"] is True
        await again.wait_for(lisbon)
        assert _account(again)[: len(seen_b) - 2] == seen_b[2:]
        # A deletion through B reaches it.
        async with http.delete(f"{b.url}/api/conversations/{cid}", headers=bearer(token)) as r:
            assert r.status == 200
        gone = await again.wait_for(lambda f: f["type"] == "conversation.deleted")
        previous = _account(again)[-2]  # whichever event came just before it
        assert gone["conversationId"] == cid and gone["seq"] == previous["seq"] + 1
        for ws in (on_a, again):
            await ws.close()


async def test_account_channel_under_concurrent_answers(cluster: Cluster) -> None:
    """Many answers at once, started through both processes by three users: each user's
    followers on A and on B see the same gapless log (one seq order, identical on both
    processes), every conversation's created → started → ended once, and nothing of the
    other users (docs/api.md, Account channel; issue 24's channel under load)."""
    a, b = await cluster.start_many(2, CERO_MAX_GENERATIONS_PER_USER="32")
    per_user = 16
    users = [await make_user_session(f"Busy account {n}") for n in range(3)]
    core = {"conversation.created", "answer.started", "answer.ended"}
    async with aiohttp.ClientSession() as http:
        followers: list[tuple[WsPeer, WsPeer, dict[str, Any], dict[str, Any]]] = []
        for token, _ in users:
            on_a, sub_a = await _watch_account(http, a, token)
            on_b, sub_b = await _watch_account(http, b, token)
            followers.append((on_a, on_b, sub_a, sub_b))
        results = await asyncio.gather(
            *(
                chat(http, (a, b)[n % 2], token, f"question {n} of {name}")
                for token, name in users
                for n in range(per_user)
            )
        )
        assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200]
        mine: list[set[str]] = [set() for _ in users]
        for i, (_, lines) in enumerate(results):
            mine[i // per_user].add(str(of_topic(lines, "init")["conversationId"]))

        for (on_a, on_b, sub_a, sub_b), cids in zip(followers, mine, strict=True):

            def ended(pair: tuple[WsPeer, WsPeer] = (on_a, on_b)) -> bool:
                return all(
                    sum(e["type"] == "answer.ended" for e in _account(ws)) >= per_user
                    for ws in pair
                )

            await until(ended, within=60, what="every answer.ended on A and on B")
            seen_a, seen_b = _account(on_a), _account(on_b)
            for seen, subscribed in ((seen_a, sub_a), (seen_b, sub_b)):
                assert seen[0]["seq"] == subscribed["seq"] + 1
                for before, after in itertools.pairwise(seen):
                    assert after["seq"] == before["seq"] + 1, (before, after)
                    assert after["epoch"] == before["epoch"]
                assert {e["conversationId"] for e in seen} == cids  # nobody else's
                for cid in cids:
                    kinds = [e["type"] for e in seen if e["conversationId"] == cid]
                    assert [k for k in kinds if k in core] == [
                        "conversation.created",
                        "answer.started",
                        "answer.ended",
                    ], (cid, kinds)
            # One log: the same events in the same order on both processes.
            common = min(len(seen_a), len(seen_b))
            assert seen_a[:common] == seen_b[:common]
            await on_a.close()
            await on_b.close()


async def test_branch_operations_through_b_run_on_owner_a(cluster: Cluster) -> None:
    """Regenerate, edit, switch and continue sent to a process that does not own the
    conversation are forwarded to the owner, like a send; a socket on the owner sees each."""
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Branch forward")
    async with aiohttp.ClientSession() as http:
        status, lines = await chat(http, a, token, "first question")
        assert status == 200, lines
        init = of_topic(lines, "init")
        cid, user1, answer1 = init["conversationId"], init["userMessageId"], init["messageId"]
        owner = await lease_owner(cluster.prefix, cid)
        assert owner is not None
        watcher = await watch(http, a, token, cid)

        async def turn(op: str, mid: str, body: dict[str, Any]) -> tuple[int, Any]:
            url = f"{b.url}/api/conversations/{cid}/messages/{mid}/{op}"
            async with http.post(url, json=body, headers=bearer(token)) as resp:
                if resp.content_type == "application/x-ndjson":
                    raw = await resp.read()
                    return resp.status, [orjson.loads(x) for x in raw.splitlines() if x]
                return resp.status, await resp.json()

        status, lines = await turn("regenerate", user1, {})
        assert status == 200, lines
        regen = of_topic(lines, "init")
        assert regen["action"] == "regenerate" and regen["userMessageId"] == user1
        await until(lambda: generated_on(a, regen["generationId"]), what="regenerated on A")
        assert not generated_on(b, regen["generationId"])
        done = await watcher.wait_for(
            lambda f: f["type"] == "done" and f["generationId"] == regen["generationId"]
        )
        assert token_text(watcher.of(cid), regen["messageId"]) == done["fullText"]

        status, switched = await turn("switch", answer1, {})
        assert status == 200 and switched["activeLeafId"] == answer1, switched
        await watcher.wait_for(lambda f: f["type"] == "branch")

        status, lines = await turn("edit", user1, {"message": "first question, again"})
        assert status == 200, lines
        edit = of_topic(lines, "init")
        assert edit["action"] == "edit"
        await until(lambda: generated_on(a, edit["generationId"]), what="edited on A")
        status, out = await turn("continue", edit["messageId"], {})
        assert status == 409 and out["code"] == "not_continuable", out
        status, out = await turn("switch", "missing", {})
        assert status == 404 and out["code"] == "not_found", out

        for server in (a, b):
            async with http.get(
                f"{server.url}/api/conversations/{cid}/messages", headers=bearer(token)
            ) as resp:
                body = await resp.json()
            ids = [m["id"] for m in body["messages"]]
            assert ids == [edit["userMessageId"], edit["messageId"]], (server.url, body)
            assert body["messages"][0]["siblingCount"] == 2
        check_seq(watcher.of(cid))
        assert await lease_owner(cluster.prefix, cid) == owner
        await watcher.close()


async def test_resume_across_processes(cluster: Cluster) -> None:
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Resume")
    async with aiohttp.ClientSession() as http:
        status, lines = await chat(http, a, token, "start")
        assert status == 200
        conversation_id = lines[0]["data"]["conversationId"]
        got: list[tuple[str | None, dict[str, Any]]] = []
        half = asyncio.Event()
        started = asyncio.Event()

        async def read_half() -> None:
            async with http.get(
                f"{a.url}/api/conversations/{conversation_id}/events", headers=bearer(token)
            ) as resp:
                started.set()
                async for event in read_sse(resp):
                    got.append((event.id, event.data))
                    tokens = [d for _, d in got if d["type"] == "token"]
                    if len(tokens) >= 8:
                        half.set()
                        return

        reader = asyncio.create_task(read_half())
        await asyncio.wait_for(started.wait(), 10)
        sending = asyncio.create_task(chat(http, a, token, "a longer answer " * 5, conversation_id))
        await asyncio.wait_for(half.wait(), 15)
        await reader
        last_id = got[-1][0]
        assert last_id is not None
        rest: list[dict[str, Any]] = []
        async with http.get(
            f"{b.url}/api/conversations/{conversation_id}/events",
            headers={**bearer(token), "Last-Event-ID": last_id},
        ) as resp:
            async for event in read_sse(resp):
                rest.append(event.data)
                if event.data["type"] == "done":
                    break
        status, lines = await sending
        assert status == 200
    events = [d for _, d in got] + rest
    assert all(e["type"] != "reset" for e in events)
    check_seq(events)  # exactly the missing events, no duplicate
    done = of_topic(lines, "done")
    init = of_topic(lines, "init")
    assert token_text(events, init["messageId"]) == done["fullText"]


async def test_owner_killed_mid_answer(cluster: Cluster, gemini: tuple[FakeGemini, str]) -> None:
    fake, _ = gemini
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Kill")
    fake.enqueue(Script(chunks=["warm "]))
    fake.enqueue(Script(chunks=[f"tok{i:04d} " for i in range(3000)], chunk_delay=0.01))
    async with aiohttp.ClientSession() as http:
        conversation_id = await warm_up(http, a, token)
        ws = await watch(http, b, token, conversation_id)

        received: list[tuple[str, float]] = []
        message_id = ""
        killed_at = 0.0
        async with post_chat(
            http, a.url, token, message="long one", aiModel=GEMINI, conversationId=conversation_id
        ) as resp:
            async for raw in resp.content:
                line = orjson.loads(raw)
                if line["topic"] == "init":
                    message_id = line["data"]["messageId"]
                elif line["topic"] == "token":
                    received.append((line["data"], time.monotonic()))
                    if len(received) == 250:
                        killed_at = time.monotonic()
                        await a.kill()
                        break
        # A fresh process started meanwhile does not touch the live row... (A is dead, but
        # its lease lives on for up to the ttl: the sweep must leave the row alone). C
        # starts beside the wait: on a loaded machine its start-up alone took seconds.
        starting = asyncio.ensure_future(cluster.start())
        error = await ws.wait_for(
            lambda f: f["type"] == "error" and f.get("messageId") == message_id,
            timeout=LEASE_TTL + 6,
        )
        noticed = time.monotonic() - killed_at
        c = await starting
        assert error["code"] == "owner_lost"
        assert noticed <= LEASE_TTL + 2 + 1.5, noticed  # 1.5 s: start-up of C meanwhile
        row = await Message.select().where(Message.id == message_id).first().run()
        assert row is not None
        assert row["status"] == "interrupted"
        lost = 'cero_generations_total{code="owner_lost",outcome="interrupted"}'
        closed = 0.0
        for survivor in (b, c):  # whichever took the lease closed the answer
            async with http.get(f"{survivor.url}/metrics", headers=METRICS_AUTH) as r:
                closed += metric_or_zero(await r.text(), lost)
        assert closed == 1
        full = "".join(t for t, _ in received)
        flushed_before = "".join(t for t, s in received if s <= killed_at - 1.0)
        assert full.startswith(row["content"])
        assert len(row["content"]) >= len(flushed_before)
        # The next send through the survivor works.
        status, lines = await chat(http, b, token, "after the kill", conversation_id)
        assert status == 200, lines
        assert of_topic(lines, "done")["fullText"]
        await ws.close()


async def stream_entries(prefix: str, conversation_id: str) -> list[dict[str, Any]]:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        entries: Any = await client.xrange(f"{prefix}c:{conversation_id}:log")
    finally:
        await client.aclose()
    return [orjson.loads(fields[b"d"]) for _, fields in entries]


async def test_fencing_a_paused_owner(cluster: Cluster, gemini: tuple[FakeGemini, str]) -> None:
    """SIGSTOP the owner past its lease, let B take over and answer, SIGCONT: the old
    owner's appends and row writes are refused and it stops its generation."""
    fake, _ = gemini
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Fence")
    fake.enqueue(Script(chunks=["warm "]))
    fake.enqueue(Script(chunks=[f"old{i:04d} " for i in range(3000)], chunk_delay=0.01))
    async with aiohttp.ClientSession() as http:
        conversation_id = await warm_up(http, a, token)
        ws = await watch(http, b, token, conversation_id)

        old_id = old_generation = ""
        tokens = 0
        paused = asyncio.Event()

        async def run_on_a() -> None:
            nonlocal old_id, old_generation, tokens
            async with post_chat(
                http,
                a.url,
                token,
                message="old one",
                aiModel=GEMINI,
                conversationId=conversation_id,
            ) as resp:
                async for raw in resp.content:
                    line = orjson.loads(raw)
                    if line["topic"] == "init":
                        old_id = line["data"]["messageId"]
                        old_generation = line["data"]["generationId"]
                    elif line["topic"] == "token":
                        tokens += 1
                        if tokens == 150 and not paused.is_set():
                            a.signal(signal.SIGSTOP)
                            paused.set()
                            return

        await asyncio.wait_for(run_on_a(), 20)
        await ws.wait_for(
            lambda f: f["type"] == "error" and f.get("messageId") == old_id, timeout=LEASE_TTL + 6
        )
        fake.enqueue(Script(chunks=["new ", "answer"]))
        status, lines = await chat(http, b, token, "new one", conversation_id, model=GEMINI)
        assert status == 200, lines
        new_id = of_topic(lines, "init")["messageId"]
        assert of_topic(lines, "done")["fullText"] == "new answer"
        old_row = await Message.select().where(Message.id == old_id).first().run()
        assert old_row is not None and old_row["status"] == "interrupted"

        a.signal(signal.SIGCONT)
        await until(lambda: "lease_lost" in a.log(), what="A logs lease_lost")

        # What the old owner would still write, it writes now: its generation ends (its
        # terminal write tried) and its write queue empties.
        async def a_is_done() -> bool:
            if not generated_on(a, old_generation):
                return False
            return total(await scrape(http, a.url), "cero_db_write_queue") == 0

        await until(a_is_done, what="A's old generation ended, its writes done")
        after = await Message.select().where(Message.id == old_id).first().run()
        assert after is not None
        assert after["status"] == "interrupted"
        assert after["content"] == old_row["content"]
        assert after["fence"] == old_row["fence"]
        new_row = await Message.select().where(Message.id == new_id).first().run()
        assert new_row is not None and new_row["content"] == "new answer"
        assert new_row["status"] == "complete"
        # The log: nothing of the old answer after its owner_lost error.
        log_events = await stream_entries(cluster.prefix, conversation_id)
        lost_at = next(
            i
            for i, e in enumerate(log_events)
            if e["type"] == "error" and e.get("messageId") == old_id
        )
        assert not any(e.get("messageId") == old_id for e in log_events[lost_at + 1 :])
        seqs = [e["seq"] for e in log_events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # The old owner's own viewers follow the one log again: a send through A works.
        fake.enqueue(Script(chunks=["third"]))
        status, lines = await chat(http, a, token, "third", conversation_id, model=GEMINI)
        assert status == 200, lines
        assert of_topic(lines, "done")["fullText"] == "third"
        await ws.close()


async def test_presence_sums_processes(cluster: Cluster) -> None:
    a, b, c = await cluster.start_many(3)
    token, _ = await make_user_session("Presence")
    async with aiohttp.ClientSession() as http:
        status, lines = await chat(http, a, token, "hello")
        assert status == 200, lines
        conversation_id = lines[0]["data"]["conversationId"]
        peers = []
        for server in (a, b, c):
            peer = WsPeer(await http.ws_connect(server.ws_url, headers=bearer(token))).start()
            await peer.send(type="subscribe", conversationId=conversation_id)
            await peer.wait_for(lambda f: f["type"] == "subscribed")
            peers.append(peer)
        for peer in peers[:2]:
            await peer.wait_for(lambda f: f["type"] == "presence" and f["viewers"] == 3, timeout=10)
        c.signal(signal.SIGKILL)
        killed = time.monotonic()
        for peer in peers[:2]:
            await peer.wait_for(
                lambda f: f["type"] == "presence" and f["viewers"] == 2,
                timeout=3 * LEASE_TTL + 4,
            )
        assert time.monotonic() - killed <= 3 * LEASE_TTL + 2.5
        for peer in peers[:2]:
            check_seq(peer.of(conversation_id))
            await peer.close()


async def test_delete_through_a_non_owner(cluster: Cluster, gemini: tuple[FakeGemini, str]) -> None:
    """Delete through B while A generates: A's actor stops, watchers on both processes
    are unsubscribed, nothing of the conversation stays."""
    fake, _ = gemini
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Delete")
    fake.enqueue(Script(chunks=["warm "]))
    fake.enqueue(Script(chunks=[f"d{i:04d} " for i in range(3000)], chunk_delay=0.01))
    async with aiohttp.ClientSession() as http:
        conversation_id = await warm_up(http, a, token)
        peers = [await watch(http, server, token, conversation_id) for server in (a, b)]
        await peers[0].send(
            type="send", conversationId=conversation_id, message="long", aiModel=GEMINI
        )
        await peers[1].wait_for(lambda f: f["type"] == "token")
        async with http.delete(
            f"{b.url}/api/conversations/{conversation_id}", headers=bearer(token)
        ) as r:
            assert r.status == 200, await r.text()
        for peer in peers:
            gone = await peer.wait_for(lambda f: f["type"] == "unsubscribed", timeout=10)
            assert gone["conversationId"] == conversation_id
        # Given back once what the actor appended last is written.
        await until(lease_released(cluster, conversation_id), 2, what="the lease given back")
        rows = await Message.select().where(Message.conversation_id == conversation_id).run()
        assert rows == []
        for peer in peers:
            await peer.close()


async def test_a_starting_process_leaves_live_answers_alone(
    cluster: Cluster, gemini: tuple[FakeGemini, str]
) -> None:
    fake, _ = gemini
    (a,) = await cluster.start_many(1)
    token, _ = await make_user_session("Sweep")
    fake.enqueue(Script(chunks=[f"s{i:04d} " for i in range(800)], chunk_delay=0.01))
    async with aiohttp.ClientSession() as http:
        sending = asyncio.create_task(chat(http, a, token, "long", model=GEMINI))
        await until(streaming, 4, what="an answer streaming on A")
        row = await streaming_row()
        assert row is not None
        c = await cluster.start()
        still = await Message.select().where(Message.id == row["id"]).first().run()
        assert still is not None and still["status"] == "streaming"
        status, lines = await sending
        assert status == 200, lines
        assert of_topic(lines, "done")["fullText"].startswith("s0000 ")
        done = await Message.select().where(Message.id == row["id"]).first().run()
        assert done is not None and done["status"] == "complete"

        # The lone process killed mid-answer and restarted at once: its lease still
        # lives, so the sweep leaves the row, and takes it once the lease has expired.
        fake.enqueue(Script(chunks=[f"k{i:04d} " for i in range(800)], chunk_delay=0.01))
        asked = len(fake.stream_requests())
        sending = asyncio.create_task(chat(http, c, token, "long", model=GEMINI))
        await until(streaming, 4, what="an answer streaming on C")
        # Killed only once its model request has reached the stand-in (the row commits
        # first): else the script stays queued and the next test streams it.
        await until(
            lambda: len(fake.stream_requests()) > asked, 4, what="C's request at the stand-in"
        )
        row = await streaming_row()
        assert row is not None
        a.signal(signal.SIGTERM)
        c.signal(signal.SIGKILL)
        killed = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError):
            await sending
        await cluster.start()
        row_id = row["id"]

        async def interrupted() -> bool:
            after = await Message.select().where(Message.id == row_id).first().run()
            assert after is not None
            return bool(after["status"] == "interrupted")

        await until(interrupted, LEASE_TTL + 6, every=0.1, what="the row interrupted")
        assert time.monotonic() - killed <= LEASE_TTL + 4


async def test_viewers_follow_when_ownership_moves(cluster: Cluster) -> None:
    """A's actor stops idle (its lease goes); a send through B makes B the owner: the
    viewer on A sees B's answer, in sequence, in the same epoch."""
    a, b = await cluster.start_many(2, CERO_ACTOR_IDLE_TIMEOUT="1")
    token, _ = await make_user_session("Moves")
    async with aiohttp.ClientSession() as http:
        status, lines = await chat(http, a, token, "on A")
        assert status == 200, lines
        conversation_id = lines[0]["data"]["conversationId"]
        ws = WsPeer(await http.ws_connect(a.ws_url, headers=bearer(token))).start()
        await ws.send(type="subscribe", conversationId=conversation_id)
        subscribed = await ws.wait_for(lambda f: f["type"] == "subscribed")
        # A's actor stops idle and gives its lease back.
        await until(lease_released(cluster, conversation_id), 5, what="A's lease given back")
        status, lines = await chat(http, b, token, "on B", conversation_id)
        assert status == 200, lines
        init = of_topic(lines, "init")
        # The log line is written by a thread of its own: it may follow the answer's end.
        await until(lambda: generated_on(b, init["generationId"]), what="generated on B")
        done = await ws.wait_for(
            lambda f: f["type"] == "done" and f["generationId"] == init["generationId"]
        )
        events = ws.of(conversation_id)
        check_seq(events)
        assert {e["epoch"] for e in events} == {subscribed["epoch"]}
        assert token_text(events, init["messageId"]) == done["fullText"]
        await ws.close()


async def test_redis_restart_keeps_running_answers(
    pg_url: str, gemini: tuple[FakeGemini, str], tmp_path: Path
) -> None:
    """A private Redis dies and comes back empty mid-answer: the answer goes on to the end
    and is stored; the next send works without restarting the server."""
    fake, gemini_url = gemini
    private = PrivateRedis(tmp_path)
    await private.start()
    cluster = Cluster(
        pg_url,
        tmp_path,
        {
            "CERO_LEASE_TTL": str(LEASE_TTL),
            "GEMINI_API_KEY": "test-key",
            "CERO_GEMINI_BASE_URL": gemini_url,
        },
        redis_url=private.url,
    )
    try:
        (a,) = await cluster.start_many(1)
        token, _ = await make_user_session("RedisDies")
        fake.enqueue(Script(chunks=[f"r{i:04d} " for i in range(600)], chunk_delay=0.01))
        async with aiohttp.ClientSession() as http:
            texts: list[str] = []
            done: dict[str, Any] = {}
            restarted = asyncio.Event()

            async def read() -> None:
                async with post_chat(http, a.url, token, message="long", aiModel=GEMINI) as resp:
                    async for raw in resp.content:
                        line = orjson.loads(raw)
                        if line["topic"] == "token":
                            texts.append(line["data"])
                            if len(texts) == 50:
                                await private.kill()
                                await asyncio.sleep(LEASE_TTL)  # past the lease's ttl
                                await private.start()
                                restarted.set()
                        elif line["topic"] in ("done", "error"):
                            done.update(line["data"], topic=line["topic"])

            await asyncio.wait_for(read(), 30)
            assert restarted.is_set()
            assert done["topic"] == "done", done
            assert done["fullText"] == "".join(f"r{i:04d} " for i in range(600))
            row = await Message.select().where(Message.id == done["messageId"]).first().run()
            assert row is not None and row["status"] == "complete"
            assert row["content"] == done["fullText"]
            status, lines = await chat(http, a, token, "after the restart")
            assert status == 200, lines
            assert of_topic(lines, "done")["fullText"]
    finally:
        await cluster.stop()
        await private.kill()


#: What asyncio logs for a background task that died of an exception nobody handled.
UNHANDLED = ("Task exception was never retrieved", "Traceback")


async def watch_through_redis_outage(
    pg_url: str, gemini: tuple[FakeGemini, str], tmp_path: Path, *, restart: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """A answers at a steady pace, a WebSocket on B watches; after 20 tokens a private
    Redis stops answering until both processes noticed (A's appends failed twice) and A
    streamed 300 more tokens to its own client (4-5 s), then answers again: paused and
    continued (its data kept), or killed and started empty (``restart``). Returns the
    events B's viewer got, A's answer (NDJSON lines) and both processes' logs."""
    fake, gemini_url = gemini
    private = PrivateRedis(tmp_path)
    await private.start()
    cluster = Cluster(
        pg_url,
        tmp_path,
        {
            "CERO_LEASE_TTL": "10",  # longer than the outage: nobody's lease expires
            "GEMINI_API_KEY": "test-key",
            "CERO_GEMINI_BASE_URL": gemini_url,
        },
        redis_url=private.url,
    )
    try:
        a, b = await cluster.start_many(2)
        token, _ = await make_user_session("RedisStops")
        fake.enqueue(Script(chunks=["warm "]))
        fake.enqueue(Script(chunks=[f"s{i:04d} " for i in range(1200)], chunk_delay=0.01))
        async with aiohttp.ClientSession() as http:
            conversation_id = await warm_up(http, a, token)
            ws = await watch(http, b, token, conversation_id)
            owner_lines: list[dict[str, Any]] = []

            async def ask() -> None:
                body: dict[str, Any] = {
                    "message": "steady",
                    "aiModel": GEMINI,
                    "conversationId": conversation_id,
                }
                async with post_chat(http, a.url, token, **body) as r:
                    assert r.status == 200, await r.text()
                    async for raw in r.content:
                        owner_lines.append(orjson.loads(raw))

            def owner_tokens() -> int:
                return sum(1 for line in owner_lines if line["topic"] == "token")

            asking = asyncio.create_task(ask())
            await ws.wait_for(lambda _f: len(ws.of(conversation_id, "token")) >= 20, timeout=15)
            if restart:
                await private.kill()
            else:
                private.pause()
            try:
                at_stop = owner_tokens()
                await until(
                    lambda: (
                        a.log().count("log_append_failed") >= 2
                        and "relay_read_failed" in b.log()
                        and owner_tokens() >= at_stop + 300
                    ),
                    within=20,
                    what="both processes met the outage; A streamed on",
                )
            finally:
                if restart:
                    await private.start()
                else:
                    private.resume()
            await asyncio.wait_for(asking, 60)
            done = next(line["data"] for line in owner_lines if line["topic"] == "done")
            await ws.wait_for(
                lambda f: f["type"] == "done" and f["messageId"] == done["messageId"], 30
            )
            events = ws.of(conversation_id)
            await ws.close()
        logs = a.log() + b.log()
    finally:
        await cluster.stop()
        await private.kill()
    return events, owner_lines, logs


@pytest.mark.parametrize("restart", [False, True], ids=["paused", "restarted_empty"])
async def test_redis_outage_mid_answer_viewers_elsewhere_miss_nothing(
    pg_url: str, gemini: tuple[FakeGemini, str], tmp_path: Path, restart: bool
) -> None:
    """Redis stops answering for a few seconds mid-answer -- paused (SIGSTOP, its data
    kept) or killed and started empty: the viewer on the process that does not own the
    conversation gets every token, in order, once Redis answers again -- no 4008, no
    ``reset`` (what Redis lost, the owner still held and appended again) -- the answer is
    stored whole, and nothing dies unhandled."""
    events, owner_lines, logs = await watch_through_redis_outage(
        pg_url, gemini, tmp_path, restart=restart
    )
    done = next(line["data"] for line in owner_lines if line["topic"] == "done")
    assert done["fullText"] == "".join(f"s{i:04d} " for i in range(1200))
    assert [e for e in events if e["type"] == "reset"] == []
    check_seq(events)
    assert token_text(events, done["messageId"]) == done["fullText"]
    row = await Message.select().where(Message.id == done["messageId"]).first().run()
    assert row is not None and row["status"] == "complete"
    assert row["content"] == done["fullText"]
    for marker in UNHANDLED:
        assert marker not in logs, logs[max(0, logs.index(marker) - 2000) :][:4000]
    if restart:
        assert "log_refilled" in logs  # the owner gave the empty Redis its log again


async def slots_in_redis(prefix: str, user_id: str) -> int:
    """The user's generation slots in Redis (every process's)."""
    client = redis.from_url(REDIS_URL)
    try:
        return int(await client.zcard(f"{prefix}generations:{user_id}"))
    finally:
        await client.aclose()


async def test_the_per_user_limit_counts_forwarded_sends(
    cluster: Cluster, gemini: tuple[FakeGemini, str]
) -> None:
    """Sends forwarded to the owner hold their slot there, however the sends and the
    owners are spread over the processes."""
    fake, _ = gemini
    a, b = await cluster.start_many(2, CERO_MAX_GENERATIONS_PER_USER="2")
    token, user_id = await make_user_session("Limited")
    stalling = Script(chunks=["Hold ", "on"], stall_after=1, stall_seconds=60)
    async with aiohttp.ClientSession() as http:
        # c1 owned by A, c2 owned by B (their first sends), c3 not yet owned.
        owned: list[str] = []
        for server in (a, b):
            status, lines = await chat(http, server, token, "warm up")
            assert status == 200, lines
            owned.append(lines[0]["data"]["conversationId"])
        c1, c2 = owned
        status, lines = await chat(http, a, token, "third")
        assert status == 200, lines
        c3 = lines[0]["data"]["conversationId"]

        async def freed() -> bool:
            return await slots_in_redis(cluster.prefix, user_id) == 0

        await until(freed, what="the warm-up sends' slots given back")

        async def stall_on(server: ServerProcess, conversation_id: str) -> aiohttp.ClientResponse:
            fake.enqueue(stalling)
            resp = await post_chat(
                http,
                server.url,
                token,
                message="hold",
                aiModel=GEMINI,
                conversationId=conversation_id,
            )
            assert resp.status == 200, await resp.text()
            first = orjson.loads(await resp.content.readline())
            assert first["topic"] == "init", first
            return resp

        # Through B to A's c1, through A to B's c2: both forwarded, both generating.
        held = [await stall_on(b, c1), await stall_on(a, c2)]
        assert await lease_owner(cluster.prefix, c1) != await lease_owner(cluster.prefix, c2)
        assert await slots_in_redis(cluster.prefix, user_id) == 2
        for server in (a, b):
            async with post_chat(
                http, server.url, token, message="one more", aiModel="demo", conversationId=c3
            ) as resp:
                assert resp.status == 429, await resp.text()
                assert (await resp.json())["code"] == "rate_limited"
        # The owners hold the slots (and renew them): the receivers gave theirs over.
        text_a = await (await http.get(f"{a.url}/metrics", headers=METRICS_AUTH)).text()
        text_b = await (await http.get(f"{b.url}/metrics", headers=METRICS_AUTH)).text()
        assert metric(text_a, "cero_generation_slots_held") == 1
        assert metric(text_b, "cero_generation_slots_held") == 1

        # Cancelled: the owners give the slots back.
        for server, conversation_id in ((a, c1), (b, c2)):
            async with http.post(
                f"{server.url}/api/conversations/{conversation_id}/cancel",
                json={},
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200
        for resp in held:
            await resp.read()
            resp.close()
        await until(freed, what="the cancelled generations' slots given back")
        status, lines = await chat(http, b, token, "now it fits", c3)
        assert status == 200, lines


async def test_non_owner_resume_cursor_replays_from_init(
    cluster: Cluster, gemini: tuple[FakeGemini, str]
) -> None:
    """Streaming on A: B (no actor, no subscriber of this conversation yet) lists the
    messages with ``resumeCursor`` read from the shared log; SSE on B after it gets the
    generation from ``init``, token-exact."""
    fake, _ = gemini
    a, b = await cluster.start_many(2)
    token, _ = await make_user_session("Joiner")
    release = asyncio.Event()
    fake.enqueue(Script(chunks=[f"j{i} " for i in range(40)], release_after=15, release=release))
    async with aiohttp.ClientSession() as http:
        resp = await post_chat(http, a.url, token, message="join on b", aiModel=GEMINI)
        assert resp.status == 200
        text = ""
        init: dict[str, Any] = {}
        async for raw in resp.content:
            line = orjson.loads(raw)
            if line["topic"] == "init":
                init = line["data"]
            elif line["topic"] == "token":
                text += line["data"]
                if text.endswith("j14 "):
                    break  # held on A after 15 chunks
        conversation_id, message_id = init["conversationId"], init["messageId"]
        url = f"{b.url}/api/conversations/{conversation_id}"
        async with http.get(url + "/messages", headers=bearer(token)) as r:
            listed = (await r.json())["messages"][-1]
        assert listed["id"] == message_id and listed["status"] == "streaming", listed
        cursor = listed["resumeCursor"]
        events: list[dict[str, Any]] = []
        async with http.get(
            url + "/events", params={"after": cursor}, headers=bearer(token)
        ) as sse:
            assert sse.status == 200
            async for event in read_sse(sse):
                events.append(event.data)
                if event.data["type"] == "init":
                    release.set()
                if event.data["type"] == "done":
                    break
        resp.release()
    events = [e for e in events if e["type"] != "presence"]
    assert events[0]["type"] == "init" and f"{events[0]['epoch']}:{events[0]['seq'] - 1}" == cursor
    check_seq(events)
    assert token_text(events, message_id) == events[-1]["fullText"]
    assert events[-1]["fullText"] == "".join(f"j{i} " for i in range(40))
