"""Chat over NDJSON, SSE and WebSocket against a live server on both engines.

The model is either the offline ``demo`` provider or the real google-genai SDK talking to
the local Gemini stand-in, scripted per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from actors.generation_timing import PHASES
from server.storage.tables import Message
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import WsPeer, chat, check_seq, post_chat, read_sse, token_text
from tests.process_stats import METRICS_AUTH

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "gemini-2.5-flash-lite"


@dataclass
class ChatStream:
    """An NDJSON chat response read line by line in the background: a test waits for the
    line it needs (``until``) while the answer is still streaming."""

    response: aiohttp.ClientResponse
    lines: list[dict[str, Any]] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> ChatStream:
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.response.content:
                line = raw.strip()
                if line:
                    self.lines.append(orjson.loads(line))
                    self._new.set()
        finally:
            self.response.release()
            self._new.set()

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                assert self._task is not None
                if self._task.done():
                    raise AssertionError(f"response ended while waiting: {self.lines[-3:]}")
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(scan(), timeout)

    def text(self) -> str:
        return "".join(line["data"] for line in self.lines if line["topic"] == "token")

    async def all(self) -> list[dict[str, Any]]:
        assert self._task is not None
        await self._task
        return self.lines


@dataclass
class Env:
    live: Live
    fake: FakeGemini
    http: aiohttp.ClientSession
    alice: str
    alice_id: str
    bob: str

    @property
    def url(self) -> str:
        return self.live.url

    async def ws(self, token: str) -> WsPeer:
        ws = await self.http.ws_connect(self.url + "/api/ws", headers=bearer(token))
        return WsPeer(ws).start()

    async def chat(self, token: str, **body: Any) -> list[dict[str, Any]]:
        return await chat(self.http, self.url, token, **body)

    async def open_chat(self, token: str, **body: Any) -> ChatStream:
        r = await post_chat(self.http, self.url, token, **body)
        assert r.status == 200, await r.text()
        return ChatStream(r).start()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with (
        live_with_gemini(database_url, flush_interval=0.2) as (live, fake),
        aiohttp.ClientSession() as http,
    ):
        alice, alice_id = await make_user_session("Alice")
        bob, _ = await make_user_session("Bob")
        yield Env(live, fake, http, alice, alice_id, bob)


@pytest.fixture(autouse=True)
def fresh_fake(env: Env) -> Iterator[None]:
    """No test inherits another's unplayed Gemini scripts: any order, any subset."""
    env.fake.scripts.clear()
    yield
    env.fake.scripts.clear()


async def stored(message_id: str) -> dict[str, Any]:
    row = await Message.select().where(Message.id == message_id).first().run()
    assert row is not None
    return dict(row)


async def test_ndjson_demo_turn(env: Env) -> None:
    lines = await env.chat(env.alice, message="Hello there, demo", aiModel="demo")
    topics = [line["topic"] for line in lines]
    assert topics[0] == "init" and topics[-1] == "done"
    assert set(topics[1:-1]) == {"token"}
    tokens = "".join(line["data"] for line in lines if line["topic"] == "token")
    assert tokens == lines[-1]["data"]["fullText"]
    assert "Hello there, demo" in tokens
    message_id = lines[0]["data"]["messageId"]
    row = await stored(message_id)
    assert row["content"] == tokens and row["status"] == "complete"
    conversation_id = lines[0]["data"]["conversationId"]
    async with env.http.get(
        f"{env.url}/api/conversations/{conversation_id}/messages", headers=bearer(env.alice)
    ) as r:
        body = await r.json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"] == tokens
    assert body["conversation"]["shortTitle"] == "Hello there, demo"
    assert len(body["messages"][0]["timestamp"]) == 5


async def test_a_turn_times_its_phases_in_metrics(env: Env) -> None:
    """``cero_turn_phase_seconds`` gets one observation per phase of a Gemini turn, from
    the session lookup to the first token written, and the turn's commit statements."""

    async def counts() -> dict[str, float]:
        async with env.http.get(env.url + "/metrics", headers=METRICS_AUTH) as r:
            text = await r.text()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("cero_turn_phase_seconds_count{"):
                labels, value = line.rsplit(" ", 1)
                found[labels.split('phase="', 1)[1].split('"', 1)[0]] = float(value)
        return found

    before = await counts()
    env.fake.enqueue(Script(chunks=["One", " two"]))
    lines = await env.chat(env.alice, message="Time me")
    assert [line["topic"] for line in lines][-1] == "done"
    after = await counts()
    grew = {phase for phase, n in after.items() if n > before.get(phase, 0.0)}
    # The writer's db_* statements differ by engine; every other phase is in every turn.
    expected = {phase for phase in PHASES if not phase.startswith("db_")}
    assert expected <= grew, expected - grew
    assert any(phase.startswith("db_") for phase in grew)
    assert all(after[phase] - before.get(phase, 0.0) == 1 for phase in expected)


async def test_sse_gemini_turn_with_tools_and_citations(env: Env) -> None:
    env.fake.enqueue(
        Script(
            chunks=["Searching", " done."],
            grounding={
                "webSearchQueries": ["cero api"],
                "groundingChunks": [{"web": {"uri": "https://a.example", "title": "A"}}],
            },
        )
    )
    async with post_chat(
        env.http,
        env.url,
        env.alice,
        headers={"Accept": "text/event-stream"},
        message="find it",
        aiModel=MODEL,
        tools=["google_search"],
    ) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = [e async for e in read_sse(r)]
    kinds = [e.event for e in events]
    assert kinds[0] == "message" and "init" in kinds and kinds[-1] == "done"
    assert all(e.id and e.id.endswith(f":{e.data['seq']}") for e in events)
    check_seq([e.data for e in events])
    done = events[-1].data
    assert done["citations"] == [{"uri": "https://a.example", "title": "A"}]
    tool = next(e.data for e in events if e.event == "tool")
    assert tool["tool"] == "google_search" and tool["payload"] == {"queries": ["cero api"]}
    assert token_text([e.data for e in events], done["messageId"]) == done["fullText"]
    row = await stored(done["messageId"])
    assert row["content"] == "Searching done."
    request = env.fake.requests[-1].body
    assert request["tools"] == [{"googleSearch": {}}]
    assert request["contents"][-1] == {"role": "user", "parts": [{"text": "find it"}]}
    assert "systemInstruction" in request


async def test_many_devices_see_the_same_stream(env: Env) -> None:
    first = await env.chat(env.alice, message="start", aiModel="demo")
    conversation_id = first[0]["data"]["conversationId"]
    peers = [await env.ws(env.alice) for _ in range(3)]
    for peer in peers:
        await peer.send(type="subscribe", conversationId=conversation_id)
        ack = await peer.wait_for(lambda f: f["type"] == "subscribed")
        assert ack["recovered"] is True
    # Presence counts grow as devices join.
    await peers[0].wait_for(lambda f: f["type"] == "presence" and f["viewers"] == 3)
    env.fake.enqueue(Script(chunks=[f"part{i} " for i in range(40)], chunk_delay=0.005))
    headers = {**bearer(env.alice), "Accept": "text/event-stream"}
    async with env.http.get(
        f"{env.url}/api/conversations/{conversation_id}/events", headers=headers
    ) as sse:
        await peers[1].send(
            type="send", conversationId=conversation_id, message="from device 2", aiModel=MODEL
        )
        sse_events: list[dict[str, Any]] = []
        async for event in read_sse(sse):
            sse_events.append(event.data)
            if event.event == "done":
                break
    done = sse_events[-1]
    for peer in peers:
        await peer.wait_for(lambda f: f["type"] == "done" and f["messageId"] == done["messageId"])
        events = peer.of(conversation_id)
        check_seq(events)
        assert token_text(events, done["messageId"]) == done["fullText"]
        user_messages = [f for f in events if f["type"] == "message"]
        assert user_messages[-1]["message"]["content"] == "from device 2"
    assert token_text(sse_events, done["messageId"]) == done["fullText"]
    assert (await stored(done["messageId"]))["content"] == done["fullText"]
    ack = next(f for f in peers[1].frames if f["type"] == "ack" and f["of"] == "send")
    assert ack["conversationId"] == conversation_id
    await peers[2].close()
    await peers[0].wait_for(lambda f: f["type"] == "presence" and f["viewers"] == 2)
    for peer in peers[:2]:
        await peer.close()


async def test_sse_resume_gets_exactly_the_missing_events(env: Env) -> None:
    first = await env.chat(env.alice, message="warm up", aiModel="demo")
    conversation_id = first[0]["data"]["conversationId"]
    headers = {**bearer(env.alice), "Accept": "text/event-stream"}
    release = asyncio.Event()
    env.fake.enqueue(
        Script(chunks=[f"w{i} " for i in range(60)], release_after=30, release=release)
    )
    seen: list[Any] = []
    async with env.http.get(
        f"{env.url}/api/conversations/{conversation_id}/events", headers=headers
    ) as sse:
        chat = await env.open_chat(
            env.alice, message="long one", aiModel=MODEL, conversationId=conversation_id
        )
        async for event in read_sse(sse):
            seen.append(event)
            if event.event == "token" and len([e for e in seen if e.event == "token"]) >= 5:
                break
    last_id = seen[-1].id
    # Events pile up while disconnected: the other reader sees all 30 held-back chunks.
    await chat.until(lambda line: line["topic"] == "token" and "w29 " in chat.text())
    release.set()
    resumed: list[Any] = []
    async with env.http.get(
        f"{env.url}/api/conversations/{conversation_id}/events",
        headers={**headers, "Last-Event-ID": last_id},
    ) as sse:
        async for event in read_sse(sse):
            resumed.append(event)
            if event.event == "done":
                break
    assert resumed[0].event != "reset"
    assert resumed[0].data["seq"] == seen[-1].data["seq"] + 1
    all_events = [e.data for e in seen + resumed if e.event != "presence"]
    check_seq([e.data for e in seen + resumed])
    done = resumed[-1].data
    assert token_text(all_events, done["messageId"]) == done["fullText"]
    lines = await chat.all()
    assert lines[-1]["data"]["fullText"] == done["fullText"]
    # A cursor from another epoch gets a reset carrying the live position.
    async with env.http.get(
        f"{env.url}/api/conversations/{conversation_id}/events?after=otherepoch:3",
        headers=headers,
    ) as sse:
        head = await read_sse(sse).__anext__()
    assert head.event == "reset"
    assert head.data["epoch"] == last_id.rsplit(":", 1)[0]


async def test_cancel_from_second_device(env: Env) -> None:
    env.fake.enqueue(Script(chunks=[f"slow{i} " for i in range(400)], chunk_delay=0.01))
    peer = await env.ws(env.alice)
    await peer.send(type="send", message="cancel me", aiModel=MODEL, clientMessageId="c-1")
    ack = await peer.wait_for(lambda f: f["type"] == "ack" and f["of"] == "send")
    conversation_id, generation_id = ack["conversationId"], ack["generationId"]
    other = await env.ws(env.alice)
    await other.send(type="subscribe", conversationId=conversation_id)
    await other.wait_for(lambda f: f["type"] == "token")
    async with env.http.post(
        f"{env.url}/api/conversations/{conversation_id}/cancel",
        json={"generationId": "stale-generation"},
        headers=bearer(env.alice),
    ) as r:
        assert (await r.json()) == {"cancelled": False}
    async with env.http.post(
        f"{env.url}/api/conversations/{conversation_id}/cancel",
        json={"generationId": generation_id},
        headers=bearer(env.alice),
    ) as r:
        assert (await r.json()) == {"cancelled": True}
    for device in (peer, other):
        event = await device.wait_for(lambda f: f["type"] == "cancelled")
        assert event["generationId"] == generation_id
    partial = token_text(peer.of(conversation_id), ack["messageId"])
    row = await stored(ack["messageId"])
    assert row["status"] == "cancelled" and row["content"] == partial and partial
    async with env.http.post(
        f"{env.url}/api/conversations/{conversation_id}/cancel",
        json={"generationId": generation_id},
        headers=bearer(env.alice),
    ) as r:
        assert (await r.json()) == {"cancelled": False}
    # The conversation takes the next turn.
    lines = await env.chat(
        env.alice, message="again", aiModel="demo", conversationId=conversation_id
    )
    assert lines[-1]["topic"] == "done"
    await peer.close()
    await other.close()


async def test_busy_and_idempotent_retry(env: Env) -> None:
    release = asyncio.Event()
    env.fake.enqueue(Script(chunks=[f"t{i} " for i in range(50)], release_after=5, release=release))
    body = {"message": "once", "aiModel": MODEL, "clientMessageId": "retry-me"}
    first = await env.open_chat(env.alice, **body)
    init = await first.until(lambda line: line["topic"] == "init")
    conversation_id = init["data"]["conversationId"]
    async with post_chat(
        env.http,
        env.url,
        env.alice,
        message="second",
        conversationId=conversation_id,
        aiModel="demo",
    ) as r:
        assert r.status == 409
        assert (await r.json())["code"] == "conversation_busy"
    retry = await env.open_chat(env.alice, **body)  # while still generating: same generation
    retried_init = await retry.until(lambda line: line["topic"] == "init")
    release.set()
    retried, original = await retry.all(), await first.all()
    assert retried_init["data"]["generationId"] == init["data"]["generationId"]
    assert retried[-1]["data"]["fullText"] == original[-1]["data"]["fullText"]
    again = await env.chat(env.alice, **body)  # after it finished
    assert again[-1]["data"]["fullText"] == original[-1]["data"]["fullText"]
    users = await Message.select().where(Message.client_message_id == "retry-me").run()
    assert len(users) == 1
    answers = (
        await Message.select()
        .where((Message.conversation_id == conversation_id) & (Message.role == "assistant"))
        .run()
    )
    assert len(answers) == 1


async def test_provider_error_mid_stream_then_next_send_works(env: Env) -> None:
    env.fake.enqueue(Script(chunks=["partial ", "answer ", "more"], error_after_chunks=2))
    peer = await env.ws(env.alice)
    await peer.send(type="send", message="fail please", aiModel=MODEL)
    ack = await peer.wait_for(lambda f: f["type"] == "ack")
    error = await peer.wait_for(lambda f: f["type"] == "error")
    assert error["code"] == "upstream_unavailable"
    row = await stored(ack["messageId"])
    assert row["status"] == "error" and row["content"] == "partial answer "
    await peer.send(
        type="send", message="ok now", aiModel="demo", conversationId=ack["conversationId"]
    )
    await peer.wait_for(lambda f: f["type"] == "done")
    await peer.close()


async def test_error_before_any_token_stores_empty_error_message(env: Env) -> None:
    env.fake.enqueue(Script(error_before=[400]))
    lines = await env.chat(env.alice, message="bad", aiModel=MODEL)
    assert lines[-1]["topic"] == "error"
    row = await stored(lines[0]["data"]["messageId"])
    assert row["status"] == "error" and row["content"] == ""


async def test_other_users_conversation_is_404_everywhere(env: Env) -> None:
    lines = await env.chat(env.alice, message="mine", aiModel="demo")
    conversation_id = lines[0]["data"]["conversationId"]
    h = bearer(env.bob)
    base = f"{env.url}/api/conversations/{conversation_id}"
    checks = [
        env.http.get(base + "/messages", headers=h),
        env.http.get(base + "/events", headers=h),
        env.http.patch(base, json={"shortTitle": "x"}, headers=h),
        env.http.delete(base, headers=h),
        env.http.post(base + "/cancel", json={}, headers=h),
        post_chat(env.http, env.url, env.bob, message="hi", conversationId=conversation_id),
        env.http.get(f"{env.url}/api/conversations/nonexistent/messages", headers=h),
    ]
    for request in checks:
        async with request as r:
            assert r.status == 404, r.url
            assert (await r.json())["code"] == "not_found"
    peer = await env.ws(env.bob)
    await peer.send(type="subscribe", conversationId=conversation_id)
    fault = await peer.wait_for(lambda f: f["type"] == "fault")
    assert fault["code"] == "not_found"
    await peer.close()
    async with env.http.get(base + "/messages", headers=bearer(env.alice)) as r:
        assert r.status == 200


async def test_conversation_listing_rename_delete(env: Env) -> None:
    token, _ = await make_user_session("Lister")
    ids = []
    for i in range(5):
        lines = await env.chat(token, message=f"topic {i}", aiModel="demo")
        ids.append(lines[0]["data"]["conversationId"])
    seen: list[str] = []
    cursor = None
    while True:
        url = f"{env.url}/api/conversations?limit=2" + (f"&cursor={cursor}" if cursor else "")
        async with env.http.get(url, headers=bearer(token)) as r:
            page = await r.json()
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    async with env.http.patch(
        f"{env.url}/api/conversations/{ids[0]}",
        json={"shortTitle": "Renamed"},
        headers=bearer(token),
    ) as r:
        assert (await r.json())["conversation"]["shortTitle"] == "Renamed"
    async with env.http.delete(f"{env.url}/api/conversations/{ids[0]}", headers=bearer(token)) as r:
        assert r.status == 200
    async with env.http.get(
        f"{env.url}/api/conversations/{ids[0]}/messages", headers=bearer(token)
    ) as r:
        assert r.status == 404
    assert not await Message.select().where(Message.conversation_id == ids[0]).run()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"message": 5}', "message"),
        (b'{"message": ""}', "message"),
        (b'{"message": "   "}', "message"),
        (b'{"message": "hi", "tools": "google_search"}', "tools"),
        (b'{"message": "hi", "tools": ["nope"], "aiModel": "gemini-2.5-flash-lite"}', "tools"),
        (b'{"message": "hi", "tools": ["google_search"], "aiModel": "demo"}', "tools"),
        (b'{"message": "hi", "aiModel": "gpt-4"}', "aiModel"),
        (b'{"message": "hi", "conversationId": 7}', "conversationId"),
        (b'{"message": "hi", "clientMessageId": ""}', "clientMessageId"),
    ],
)
async def test_chat_bad_input(env: Env, body: bytes, field: str | None) -> None:
    async with env.http.post(
        env.url + "/api/chat",
        data=body,
        headers={**bearer(env.alice), "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400, await r.text()
        payload = await r.json()
        assert set(payload) >= {"error", "code"}
        if field:
            assert field in payload["error"]


async def test_chat_limits_and_credentials(env: Env) -> None:
    too_long = "x" * (env.live.settings.max_message_chars + 1)
    async with post_chat(env.http, env.url, env.alice, message=too_long) as r:
        assert r.status == 400
    async with env.http.post(
        env.url + "/api/chat", data=b"x" * (2 << 20), headers=bearer(env.alice)
    ) as r:
        assert r.status == 413
    for headers in ({}, bearer("not-a-token")):
        async with env.http.post(
            env.url + "/api/chat", json={"message": "hi"}, headers=headers
        ) as r:
            assert r.status == 401
            assert await r.json() == {"error": "Unauthorized", "code": "unauthorized"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.http.ws_connect(env.url + "/api/ws?token=nope")
    assert info.value.status == 401


async def test_models_endpoint(env: Env) -> None:
    async with env.http.get(env.url + "/api/models") as r:
        body = await r.json()
    ids = [m["id"] for m in body["models"]]
    assert "demo" in ids and MODEL in ids
    assert [m["id"] for m in body["models"] if m["default"]] == [MODEL]
    assert body["maxMessageChars"] == 32_000  # CERO_MAX_MESSAGE_CHARS: the composer's counter


class RecordingWriter:
    """Stands in front of the flusher's store for one test: every batch it writes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        #: Each write as ``(message id, the answer's text after it)``.
        self.batches: list[list[tuple[str, str]]] = []
        self.texts: dict[str, str] = {}
        self.changed = asyncio.Event()

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None:
        await self.inner.append_partials(batch)
        written = []
        for message_id, chars, suffix in batch:
            text = self.texts[message_id] = self.texts.get(message_id, "")[:chars] + suffix
            written.append((message_id, text))
        self.batches.append(written)
        self.changed.set()

    async def until(self, predicate: Callable[[list[tuple[str, str]]], bool]) -> None:
        async def scan() -> None:
            while not any(predicate(batch) for batch in self.batches):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(scan(), 10.0)


async def test_partial_answers_are_flushed_together(env: Env) -> None:
    """Three answers streaming at once: their partial text reaches the database in
    batches, at most one per flush interval, never per token (that every answer dirty at
    a tick shares one batch is ``tests/actors/test_flusher_unit.py``'s to show)."""
    from server.core.app_keys import REGISTRY

    flusher = env.live.app[REGISTRY].deps.flusher
    release = asyncio.Event()
    held = 20  # every answer streams this many chunks, then waits for `release`
    for _ in range(3):
        env.fake.enqueue(
            Script(chunks=[f"p{i} " for i in range(150)], release_after=held, release=release)
        )
    partial = "".join(f"p{i} " for i in range(held))
    writer = RecordingWriter(flusher.store)
    flusher.store = writer
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        chats = [
            await env.open_chat(env.alice, message=f"stream {n}", aiModel=MODEL) for n in range(3)
        ]
        ids = [(await c.until(lambda line: line["topic"] == "init"))["data"]["messageId"]
               for c in chats]  # fmt: skip
        # Each held answer's partial text is written by some interval's batch.
        for message_id in ids:
            await writer.until(lambda batch, i=message_id: (i, partial) in batch)  # type: ignore[misc]
        rows = await Message.select().where(Message.id.is_in(ids)).run()
        assert [(r["status"], r["content"]) for r in rows] == [("streaming", partial)] * 3
        release.set()
        results = [await c.all() for c in chats]
    finally:
        flusher.store = writer.inner
    intervals = (loop.time() - started) / flusher.interval
    assert len(writer.batches) <= intervals + 1, (len(writer.batches), intervals)
    assert len(writer.batches) < 20  # 450 tokens: a handful of writes
    for batch in writer.batches:
        assert len({message_id for message_id, _ in batch}) == len(batch) <= 3
    for lines in results:
        row = await stored(lines[0]["data"]["messageId"])
        assert row["status"] == "complete" and row["content"] == lines[-1]["data"]["fullText"]


async def test_resume_cursor_joins_a_streaming_answer_token_exact(env: Env) -> None:
    """A streaming message over REST names ``resumeCursor``: SSE (``?after=`` and
    ``Last-Event-ID``) and WebSocket subscribers after it get the generation replayed from
    ``init`` and then live, the tokens exactly ``fullText`` (no gap, no duplicate)."""
    release = asyncio.Event()
    env.fake.enqueue(
        Script(chunks=[f"r{i} " for i in range(60)], release_after=20, release=release)
    )
    chat = await env.open_chat(env.alice, message="join me exactly", aiModel=MODEL)
    init = (await chat.until(lambda line: line["topic"] == "init"))["data"]
    conversation_id, message_id = init["conversationId"], init["messageId"]
    await chat.until(lambda _line: chat.text().endswith("r19 "))  # held after 20 chunks
    url = f"{env.url}/api/conversations/{conversation_id}"
    async with env.http.get(url + "/messages", headers=bearer(env.alice)) as r:
        assert r.status == 200
        messages = (await r.json())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert "resumeCursor" not in messages[0]
    answer = messages[1]
    assert answer["id"] == message_id and answer["status"] == "streaming"
    cursor = answer["resumeCursor"]
    epoch, _, seq = cursor.rpartition(":")
    assert epoch and seq.isdigit()

    peer = await env.ws(env.alice)
    await peer.send(type="subscribe", conversationId=conversation_id, after=cursor)
    sse_query = await env.http.get(
        url + "/events", params={"after": cursor}, headers=bearer(env.alice)
    )
    sse_header = await env.http.get(
        url + "/events", headers={**bearer(env.alice), "Last-Event-ID": cursor}
    )
    ws_first = await peer.wait_for(lambda f: f.get("type") == "init")
    release.set()

    async def until_done(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async for event in read_sse(resp):
            events.append(event.data)
            if event.data["type"] == "done" and event.data["messageId"] == message_id:
                break
        resp.release()
        return events

    streams = [await until_done(sse_query), await until_done(sse_header)]
    done = await peer.wait_for(lambda f: f.get("type") == "done")
    streams.append(peer.of(conversation_id))
    await peer.close()
    await chat.all()
    assert ws_first["seq"] == int(seq) + 1 and ws_first["messageId"] == message_id
    full = done["fullText"]
    assert full == "".join(f"r{i} " for i in range(60))
    for events in streams:
        events = [e for e in events if e["type"] != "presence"]
        assert events[0]["type"] == "init" and events[0]["seq"] == int(seq) + 1
        assert events[-1]["type"] == "done"
        check_seq(events)
        assert token_text(events, message_id) == full

    # Finished: the field is gone with the streaming status.
    async with env.http.get(url + "/messages", headers=bearer(env.alice)) as r:
        finished = (await r.json())["messages"][1]
    assert finished["status"] == "complete" and "resumeCursor" not in finished
