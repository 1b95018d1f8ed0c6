"""Small ones from issues 9 and 15: every id the server mints has >= 120 random bits, the
SQLite database files are owner-only, and every response is counted in ``/metrics``."""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import string
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from actors.event_log import EventLog
from server.auth.local import LOCAL_PROFILE
from server.auth.sessions import SessionStore
from server.auth.users import link_or_create
from server.core.ids import new_id, new_token
from server.storage import db
from server.storage.tables import Account, Conversation, Message, Session, User
from tests.auth_helpers import bearer, make_user_session
from tests.conftest import Live, live_app
from tests.live_clients import post_chat, read_ndjson, read_sse
from tests.process_stats import METRICS_AUTH

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIN_BITS = 120
_ALPHABETS = (
    set(string.hexdigits.lower()),  # token_hex: 4 bits a character
    set(string.ascii_letters + string.digits + "-_"),  # token_urlsafe: 6 bits a character
)


def random_bits(value: str) -> float:
    """The entropy a value can carry, from its length and the smallest alphabet it fits:
    the server's ids are ``secrets`` strings, uniform over that alphabet."""
    chars = set(value)
    for alphabet in _ALPHABETS:
        if chars <= alphabet:
            return len(value) * math.log2(len(alphabet))
    raise AssertionError(f"{value!r} is not a hex or URL-safe base64 id")


def check_ids(kind: str, values: Iterable[str]) -> None:
    values = list(values)
    assert values, kind
    for value in values:
        assert random_bits(value) >= MIN_BITS, f"{kind} {value!r}: {random_bits(value):.0f} bits"
    assert len(set(values)) == len(values), f"{kind}: repeated values"


async def test_the_minting_functions() -> None:
    check_ids("new_id", (new_id() for _ in range(200)))
    check_ids("new_token", (new_token() for _ in range(200)))
    check_ids("epoch", (EventLog("c").epoch for _ in range(200)))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_every_id_on_the_wire(live: Live, http: aiohttp.ClientSession) -> None:
    token, _ = await make_user_session("Ids")
    request_ids: list[str] = []
    ids: dict[str, list[str]] = {
        k: [] for k in ("conversationId", "generationId", "messageId", "userMessageId", "epoch")
    }
    conversation_id: str | None = None
    for turn in range(3):
        body: dict[str, Any] = {"message": f"turn {turn}", "aiModel": "demo"}
        if conversation_id is not None:
            body["conversationId"] = conversation_id
        sse = {"Accept": "text/event-stream"}
        async with post_chat(http, live.url, token, headers=sse, **body) as r:
            assert r.status == 200
            async for event in read_sse(r):
                assert event.id is not None
                ids["epoch"].append(event.id.rpartition(":")[0])
                if event.event == "init":
                    for key in ("conversationId", "generationId", "messageId", "userMessageId"):
                        ids[key].append(event.data[key])
                    conversation_id = event.data["conversationId"]
                if event.event in ("done", "error", "cancelled"):
                    break
    # A new conversation's log has its own epoch.
    async with post_chat(http, live.url, token, message="another", aiModel="demo") as r:
        lines = await read_ndjson(r)
        ids["conversationId"].append(lines[0]["data"]["conversationId"])
        ids["generationId"].append(lines[0]["data"]["generationId"])
    ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token))
    try:
        await ws.send_str(
            orjson.dumps({"type": "subscribe", "conversationId": conversation_id}).decode()
        )
        subscribed = orjson.loads(await ws.receive_str(timeout=10))
        assert subscribed["type"] == "subscribed"
        ids["epoch"].append(subscribed["epoch"])
    finally:
        await ws.close()

    for _ in range(3):
        async with http.get(live.url + "/api/user/whoami", headers=bearer(token)) as r:
            request_ids.append(r.headers["X-Request-ID"])
    for kind, values in ids.items():
        distinct = list(dict.fromkeys(values))  # an epoch repeats on every event of a log
        check_ids(kind, distinct)
    check_ids("X-Request-ID", request_ids)

    async with http.get(live.url + "/api/auth/get-session", headers=bearer(token)) as r:
        session = (await r.json())["session"]
    check_ids("session id", [session["id"]])
    check_ids("session token", [token])

    # Rows minted by sign-in (user, account, session) and by chat (conversations, messages).
    user_id, _ = await link_or_create(LOCAL_PROFILE)
    await SessionStore().start(user_id, ip_address="127.0.0.1", user_agent="ids")
    for table in (User, Account, Session, Conversation, Message):
        rows = await table.select(table._meta.primary_key).run()
        check_ids(table._meta.tablename, [str(row["id"]) for row in rows])


# -- SQLite files are owner-only -----------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_files_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cero.db"
    old_umask = os.umask(0o022)  # the usual umask, which gives 0644 files
    try:
        async with live_app(f"sqlite:///{path}", flush_interval=0.05) as running:
            # Keep a reader open so the -wal/-shm files stay while the server writes.
            reader = sqlite3.connect(path)
            try:
                reader.execute("SELECT count(*) FROM message").fetchone()
                token, _ = await make_user_session("Files")
                async with aiohttp.ClientSession() as http:
                    async with post_chat(
                        http, running.url, token, message="write something", aiModel="demo"
                    ) as r:
                        assert r.status == 200
                        await read_ndjson(r)
                files = [path, path.with_name("cero.db-wal"), path.with_name("cero.db-shm")]
                for file in files:
                    assert file.exists(), file
                    assert _mode(file) == 0o600, f"{file.name}: {oct(_mode(file))}"
            finally:
                reader.close()
    finally:
        os.umask(old_umask)


async def test_existing_sqlite_files_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "cero.db"
    side = [path.with_name("cero.db-wal"), path.with_name("cero.db-shm")]
    for file in (path, *side):
        file.touch()
        file.chmod(0o644)
    db.prepare_sqlite(db.engine_for_url(f"sqlite:///{path}"))
    for file in (path, *side):
        if file.exists():  # SQLite may fold an empty WAL away
            assert _mode(file) == 0o600, f"{file.name}: {oct(_mode(file))}"


# -- metrics count every response ------------------------------------------------------------


def _responses(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cero_http_responses_total":
                key = (sample.labels["method"], sample.labels["route"], sample.labels["status"])
                out[key] = sample.value
    return out


async def test_metrics_count_errors_with_route_and_status(
    live: Live, http: aiohttp.ClientSession
) -> None:
    token, _ = await make_user_session("Metrics")
    max_body = live.settings.max_body
    probes: list[tuple[str, str, dict[str, Any], tuple[str, str, str]]] = [
        ("GET", "/no/such/path", {}, ("GET", "unmatched", "404")),
        ("GET", "/api/user/whoami", {}, ("GET", "/api/user/whoami", "401")),
        (
            "POST",
            "/api/chat",
            {
                "data": b"{not json",
                "headers": {**bearer(token), "Content-Type": "application/json"},
            },
            ("POST", "/api/chat", "400"),
        ),
        (
            "POST",
            "/api/chat",
            {"data": b"x" * (max_body + 1), "headers": bearer(token)},
            ("POST", "/api/chat", "413"),
        ),
        (
            "GET",
            "/api/conversations/nope/messages",
            {"headers": bearer(token)},
            ("GET", "/api/conversations/{id}/messages", "404"),
        ),
        ("GET", "/healthz", {}, ("GET", "/healthz", "200")),
    ]

    async def scrape() -> dict[tuple[str, str, str], float]:
        async with http.get(live.url + "/metrics", headers=METRICS_AUTH) as r:
            return _responses(await r.text())

    before = await scrape()
    for method, path, kwargs, _ in probes:
        async with http.request(method, live.url + path, **kwargs) as r:
            await r.read()
    after = await scrape()
    for _, _, _, key in probes:
        assert after.get(key, 0) - before.get(key, 0) == 1, (key, sorted(after))
    # A stream is counted too.
    async with post_chat(http, live.url, token, message="count me", aiModel="demo") as r:
        await read_ndjson(r)
    streamed = await scrape()
    key = ("POST", "/api/chat", "200")
    assert streamed.get(key, 0) - after.get(key, 0) == 1
