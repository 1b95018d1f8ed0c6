"""Replay amplification (issue 20, item 6): bytes of replay per WebSocket, and per user for
SSE event streams, are bounded by ``CERO_REPLAY_BYTES_PER_MINUTE``.

A ``subscribe`` from the start of a log with a long answer made the server re-send the whole
answer every time: 500 of them sent 1 GB on one socket. Now a replay that the budget cannot
pay for is replaced by ``reset`` (``recovered: false``), the subscription goes on live, and
the refusal is counted in ``cero_limit_refusals_total{limit="replay_bytes"}``. A single
resume within the budget still replays token-exact. Real server, real clients; the bucket
itself is also checked on a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio

from actors.event_log import EventLog
from server.core.config import ConfigError, load_settings
from server.transports.replay_budget import ReplayBudget, UserReplayBudgets
from standins.gemini import FakeGemini, Script
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_with_gemini
from tests.live_clients import WsPeer, check_seq, read_sse, token_text
from tests.process_stats import refusals

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "gemini-2.5-flash-lite"
BUDGET = 1 << 20
#: ~300 KB of text in 1,500 tokens: ~0.6 MB of replayed frames, so one replay fits the
#: budget and a second one within the minute does not.
CHUNKS = [f"{i:05d} " + "x" * 194 for i in range(1500)]
#: Generous room for control frames (`subscribed`, `reset`, `ack`) per subscribe.
CONTROL_BYTES = 1024


@dataclass
class Big:
    live: Live
    fake: FakeGemini
    token: str
    conversation_id: str
    message_id: str
    epoch: str
    full_text: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def big(database_url: str) -> AsyncIterator[Big]:
    # The server's default retry backoff (0.5 s), as this module had before.
    async with live_with_gemini(
        database_url, gemini_retry_backoff=0.5, replay_bytes_per_minute=BUDGET
    ) as (live, fake):
        yield await _big(live, fake)


async def _big(live: Live, fake: FakeGemini) -> Big:
    token, _ = await make_user_session("Replayer")
    fake.enqueue(Script(chunks=list(CHUNKS)))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token), max_msg_size=0)
        peer = WsPeer(ws).start()
        await peer.send(type="send", message="a long one", aiModel=MODEL)
        done = await peer.wait_for(lambda f: f["type"] == "done", timeout=60)
        await peer.close()
    return Big(
        live,
        fake,
        token,
        done["conversationId"],
        done["messageId"],
        done["epoch"],
        done["fullText"],
    )


async def test_repeated_subscribes_from_the_start_are_bounded(big: Big) -> None:
    live = big.live
    start = f"{big.epoch}:0"
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "replay_bytes")
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(big.token), max_msg_size=0)
        peer = WsPeer(ws).start()
        began = time.monotonic()
        # One resume from the start: within the budget, replayed whole and token-exact.
        await peer.send(type="subscribe", conversationId=big.conversation_id, after=start)
        done = await peer.wait_for(lambda f: f["type"] == "done")
        assert peer.frames[0]["type"] == "subscribed" and peer.frames[0]["recovered"] is True
        replayed = peer.of(big.conversation_id)
        check_seq(replayed)
        assert replayed[0]["seq"] == 1 and done["seq"] == peer.frames[0]["seq"]
        assert token_text(replayed, big.message_id) == big.full_text
        one_replay = peer.received
        assert one_replay > BUDGET // 2  # the next one does not fit

        # The amplification: the same subscribe again and again on the same socket.
        again = 30
        for _ in range(again):
            await peer.send(type="subscribe", conversationId=big.conversation_id, after=start)
        await peer.send(type="ping")
        await peer.wait_for(lambda f: f["type"] == "ack" and f["of"] == "ping", timeout=60)
        elapsed = time.monotonic() - began
        answers = [f for f in peer.frames if f["type"] == "subscribed"][1:]
        assert len(answers) == again
        refused = [f for f in answers if not f["recovered"]]
        # What the budget allows in the time taken (it refills at BUDGET a minute).
        allowed = BUDGET * (1 + elapsed / 60) + (again + 2) * CONTROL_BYTES
        assert peer.received <= allowed, (peer.received, allowed, len(refused))
        assert len(refused) >= again - 1
        # Each refused one is answered like a cursor that cannot be replayed: `reset`.
        resets = peer.of(big.conversation_id, "reset")
        assert len(resets) == len(refused)
        assert await refusals(http, live.url, "replay_bytes") == before + len(refused)

        # The subscription stays live: the next answer arrives once, in order.
        mark = len(peer.frames)
        big.fake.enqueue(Script(chunks=["still ", "live"]))
        await peer.send(
            type="send", conversationId=big.conversation_id, message="more", aiModel=MODEL
        )
        last = await peer.wait_for(
            lambda f: f["type"] == "done" and f["messageId"] != big.message_id
        )
        live_events = [
            f
            for f in peer.frames[mark:]
            if f.get("conversationId") == big.conversation_id
            and f["type"] not in ("ack", "subscribed", "fault")
        ]
        check_seq(live_events)
        assert token_text(live_events, last["messageId"]) == "still live"
        await peer.close()


async def test_sse_resumes_share_one_budget_per_user(big: Big) -> None:
    live = big.live
    url = f"{live.url}/api/conversations/{big.conversation_id}/events"
    after = f"{big.epoch}:0"
    async with aiohttp.ClientSession() as http:
        before = await refusals(http, live.url, "replay_bytes")
        async with http.get(url, params={"after": after}, headers=bearer(big.token)) as resp:
            assert resp.status == 200
            events = []
            async for event in read_sse(resp):
                events.append(event.data)
                if event.event == "done":
                    break
        # The first resume from the start of the log replays it whole, token-exact.
        assert events[0]["seq"] == 1
        check_seq(events)
        assert token_text(events, big.message_id) == big.full_text
        # Reconnecting again and again (new streams, each a new request): `reset` first.
        tries = 5
        for i in range(tries):
            headers = bearer(big.token)
            if i % 2:
                headers["Last-Event-ID"] = after
            params = {} if i % 2 else {"after": after}
            async with http.get(url, params=params, headers=headers) as resp:
                assert resp.status == 200
                first = await anext(read_sse(resp))
            assert first.event == "reset", first
        assert await refusals(http, live.url, "replay_bytes") == before + tries


async def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="CERO_REPLAY_BYTES_PER_MINUTE"):
        load_settings(env_file=None, secret="s" * 32, replay_bytes_per_minute=1000)


async def test_budget_is_a_bucket_of_bytes_refilled_per_minute() -> None:
    now = [0.0]
    budget = ReplayBudget(600, clock=lambda: now[0])
    assert budget.spend(500)
    assert not budget.spend(200)  # 100 left: refused, and nothing is taken
    assert budget.spend(100)
    now[0] += 6.0  # 10 bytes a second
    assert not budget.spend(61)
    assert budget.spend(60)
    now[0] += 3600.0
    assert budget.full() and budget.spend(600) and not budget.full()


async def test_per_user_budgets_are_separate() -> None:
    budgets = UserReplayBudgets(1000, clock=lambda: 0.0)
    assert budgets.of("a").spend(1000)
    assert not budgets.of("a").spend(1)
    assert budgets.of("b").spend(1000)


async def test_a_refused_replay_is_a_reset_then_live() -> None:
    hub = EventLog("c", epoch="e")
    for i in range(5):
        hub.append("token", {"messageId": "m", "text": str(i)})
    sub = hub.subscribe("e:0", notify=lambda: None)
    assert [e.seq for e in sub.take()] == [1, 2, 3, 4, 5]  # the replay, taken to be sized
    sub.refuse_replay()
    assert not sub.recovered and not sub.overflowed
    hub.append("token", {"messageId": "m", "text": "5"})
    reset, live = sub.take()
    assert (reset.type, reset.seq, live.seq) == ("reset", 5, 6)  # live from reset.seq + 1
