"""``GET /api/search`` over real HTTP, on both engines (docs/api.md, Search; issue 24):
words in messages and titles, ranking, pages without duplicates or gaps, one user never
finding another's text, hostile input never a 5xx, deleted conversations gone, a
streaming answer's flushed text found, and the migration indexing rows stored before it.

Each test searches for words of its own (:func:`_word`), so tests sharing the module's
database do not see each other's rows.
"""

from __future__ import annotations

import importlib
import re
import secrets
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.clock import utcnow
from server.core.ids import new_id
from server.routes.search import MAX_QUERY, QUERY_PATTERN
from server.storage.search import PG_INDEXED_CHARS, fts5_match
from server.storage.tables import Conversation, Message
from tests.auth_helpers import bearer, make_user_session
from tests.conditions import until
from tests.conftest import Live
from tests.live_clients import chat, post_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEARCH_MIGRATION = importlib.import_module("migrations.cero_2026_12_07t09_00_00_000000")


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    # Answers of ~1.5 s flushed every 0.1 s: a test reads an answer's text mid-stream.
    return {"demo_token_delay": 0.04, "flush_interval": 0.1}


def _word() -> str:
    """A word no other test writes (letters only: one token on both engines)."""
    return "w" + "".join(secrets.choice("abcdefghijklmnopqrstuvxyz") for _ in range(10))


async def _search(
    http: aiohttp.ClientSession, live: Live, token: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    query = {k: str(v) for k, v in params.items()}
    async with http.get(live.url + "/api/search", params=query, headers=bearer(token)) as resp:
        return resp.status, orjson.loads(await resp.read())


async def _hits(http: aiohttp.ClientSession, live: Live, token: str, q: str) -> list[Any]:
    status, body = await _search(http, live, token, q=q, limit=50)
    assert status == 200, body
    assert body["nextCursor"] is None, "more than one page: the test expected fewer"
    return list(body["results"])


async def _turn(http: aiohttp.ClientSession, live: Live, token: str, text: str, **body: Any) -> Any:
    lines = await chat(http, live.url, token, message=text, aiModel="demo", **body)
    assert lines[-1]["topic"] == "done", lines[-1]
    return lines[0]["data"]  # init: conversationId, userMessageId, messageId


async def _insert(conversation_id: str, role: str, content: str) -> str:
    now = utcnow()
    message_id = new_id()
    await Message.insert(
        Message(
            id=message_id,
            conversation_id=conversation_id,
            role=role,
            content=content,
            status="complete",
            created_at=now,
            updated_at=now,
        )
    ).run()
    return message_id


async def test_finds_words_in_messages_and_titles(live: Live) -> None:
    token, _ = await make_user_session("Finder")
    word, title_word = _word(), _word()
    async with aiohttp.ClientSession() as http:
        init = await _turn(http, live, token, f"Tell me about the {word} festival")
        cid = init["conversationId"]
        async with http.patch(
            f"{live.url}/api/conversations/{cid}",
            json={"shortTitle": f"Plans for Café {title_word}"},
            headers=bearer(token),
        ) as resp:
            assert resp.status == 200
        hits = await _hits(http, live, token, word.upper())  # case folded
        by_id = {h.get("messageId"): h for h in hits}
        user_hit = by_id[init["userMessageId"]]
        assert user_hit == {
            "kind": "message",
            "conversationId": cid,
            "conversationTitle": f"Plans for Café {title_word}",
            "messageId": init["userMessageId"],
            "role": "user",
            "snippet": user_hit["snippet"],
            "createdAt": user_hit["createdAt"],
            "onActivePath": True,
        }
        assert f"«{word}»" in user_hit["snippet"], user_hit
        assert user_hit["createdAt"].endswith("Z")
        # The demo answer quotes the message: found too, as the assistant's.
        assert by_id[init["messageId"]]["role"] == "assistant"
        assert len(hits) == 2
        # The title, and only the title (the messages do not hold that word).
        (title,) = await _hits(http, live, token, title_word)
        assert title["kind"] == "title" and title["conversationId"] == cid
        assert "messageId" not in title and "role" not in title
        assert title["snippet"] == f"Plans for Café «{title_word}»"
        # Several words: all of them must be there (AND), in any order.
        assert len(await _hits(http, live, token, f"festival {word}")) == 2
        assert await _hits(http, live, token, f"{word} {_word()}") == []
        if live.settings.database_url.startswith("sqlite"):  # unicode61 remove_diacritics 2
            assert [h["kind"] for h in await _hits(http, live, token, f"cafe {title_word}")] == [
                "title"
            ]


async def test_a_message_off_the_active_branch_is_found_and_says_so(live: Live) -> None:
    token, _ = await make_user_session("Brancher")
    first, second = _word(), _word()
    async with aiohttp.ClientSession() as http:
        init = await _turn(http, live, token, f"{first} version")
        cid = init["conversationId"]
        url = f"{live.url}/api/conversations/{cid}/messages/{init['userMessageId']}/edit"
        async with http.post(
            url, json={"message": f"{second} version"}, headers=bearer(token)
        ) as resp:
            assert resp.status == 200
            await resp.read()  # the edit's whole answer
        (old,) = [h for h in await _hits(http, live, token, first) if h.get("role") == "user"]
        (new,) = [h for h in await _hits(http, live, token, second) if h.get("role") == "user"]
        assert old["onActivePath"] is False and new["onActivePath"] is True


async def test_more_occurrences_rank_higher(live: Live) -> None:
    token, _ = await make_user_session("Ranker")
    word = _word()
    async with aiohttp.ClientSession() as http:
        cid = (await _turn(http, live, token, "a conversation to hold rows"))["conversationId"]
        once = await _insert(
            cid, "user", f"{word} and a great many other words around it, said only once"
        )
        thrice = await _insert(cid, "assistant", f"{word} {word} {word} again")
        twice = await _insert(cid, "user", f"{word} then {word} twice")
        hits = await _hits(http, live, token, word)
        assert [h["messageId"] for h in hits] == [thrice, twice, once]
        assert all(h["onActivePath"] is False for h in hits)  # inserted outside the tree


async def test_pages_have_no_duplicates_and_no_gaps(live: Live) -> None:
    token, _ = await make_user_session("Pager")
    word = _word()
    async with aiohttp.ClientSession() as http:
        cid = (await _turn(http, live, token, f"{word} title source"))["conversationId"]
        for n in range(9):  # equal scores included: ties broken by the key
            await _insert(cid, "user", f"{word} row {n % 3}")
        everything = await _hits(http, live, token, word)
        assert len(everything) == 12  # 9 rows, the turn's two messages and the title
        for limit in (1, 2, 5):
            seen: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"q": word, "limit": limit}
                if cursor:
                    params["cursor"] = cursor
                status, page = await _search(http, live, token, **params)
                assert status == 200, page
                assert len(page["results"]) <= limit
                seen += [_name(h) for h in page["results"]]
                cursor = page["nextCursor"]
                if cursor is None:
                    break
            whole = [_name(h) for h in everything]
            assert seen == whole, limit


def _name(hit: dict[str, Any]) -> str:
    return str(hit.get("messageId") or "title:" + hit["conversationId"])


async def test_another_user_never_finds_my_text(live: Live) -> None:
    alice, _ = await make_user_session("Alice")
    bob, _ = await make_user_session("Bob")
    word, title_word = _word(), _word()
    phrase = f"my secret {word} is buried under the old oak"
    async with aiohttp.ClientSession() as http:
        init = await _turn(http, live, alice, phrase)
        async with http.patch(
            f"{live.url}/api/conversations/{init['conversationId']}",
            json={"shortTitle": f"secret {title_word}"},
            headers=bearer(alice),
        ):
            pass
        assert len(await _hits(http, live, alice, phrase)) == 2
        await _turn(http, live, bob, "my own secret under the oak")  # Bob has rows too
        for q in (word, phrase, title_word, f"secret {title_word}", f'"{phrase}"'):
            hits = await _hits(http, live, bob, q)
            assert hits == [], (q, hits)
        bob_hits = await _hits(http, live, bob, "secret oak")
        assert bob_hits and all(h["conversationId"] != init["conversationId"] for h in bob_hits)
        assert all(word not in h["snippet"] for h in bob_hits)


async def test_other_users_rows_do_not_change_my_ranking(live: Live) -> None:
    """A score depends on its own row only: Alice writing many rows with Bob's words
    changes neither Bob's order nor his cursors (which carry the scores)."""
    alice, _ = await make_user_session("Alice2")
    bob, _ = await make_user_session("Bob2")
    one, two = _word(), _word()
    async with aiohttp.ClientSession() as http:
        cid = (await _turn(http, live, bob, "bob's rows"))["conversationId"]
        await _insert(cid, "user", f"{one} {one} {two} and more words")
        await _insert(cid, "user", f"{one} {two} {two}")
        await _insert(cid, "user", f"{two} {one}")

        async def pages() -> list[tuple[list[str], str | None]]:
            out = []
            cursor = None
            while True:
                params: dict[str, Any] = {"q": f"{one} {two}", "limit": 1}
                if cursor:
                    params["cursor"] = cursor
                status, page = await _search(http, live, bob, **params)
                assert status == 200, page
                out.append(([_name(h) for h in page["results"]], page["nextCursor"]))
                cursor = page["nextCursor"]
                if cursor is None:
                    return out

        before = await pages()
        assert len(before) == 3
        theirs = (await _turn(http, live, alice, "alice's rows"))["conversationId"]
        for n in range(30):
            await _insert(theirs, "user", f"{one} " * (n % 4 + 1))
        assert await pages() == before


async def test_a_deleted_conversation_is_no_longer_found(live: Live) -> None:
    token, _ = await make_user_session("Deleter")
    word = _word()
    async with aiohttp.ClientSession() as http:
        init = await _turn(http, live, token, f"soon gone {word}")
        cid = init["conversationId"]
        async with http.patch(
            f"{live.url}/api/conversations/{cid}", json={"shortTitle": word}, headers=bearer(token)
        ):
            pass
        assert len(await _hits(http, live, token, word)) == 3
        async with http.delete(f"{live.url}/api/conversations/{cid}", headers=bearer(token)) as r:
            assert r.status == 200
        assert await _hits(http, live, token, word) == []


async def test_a_streaming_answers_flushed_text_is_found(live: Live) -> None:
    token, _ = await make_user_session("Streamer")
    word = _word()
    async with aiohttp.ClientSession() as http:
        async with post_chat(
            http, live.url, token, message=f"quote {word} back", aiModel="demo"
        ) as resp:
            assert resp.status == 200
            first = orjson.loads(await resp.content.readline())
            answer_id = first["data"]["messageId"]

            async def found() -> bool:
                hits = await _hits(http, live, token, word)
                return any(h.get("messageId") == answer_id for h in hits)

            await until(found, within=5.0, what="the answer's flushed text in the index")
            row = await Message.select(Message.status).where(Message.id == answer_id).first().run()
            assert row == {"status": "streaming"}  # found before the answer ended
            async for _ in resp.content:
                pass


HOSTILE = [
    '"',
    '""',
    "'",
    "*",
    "a*",
    "NEAR(a b)",
    "a OR b",
    "a AND NOT b",
    "-a",
    "^a",
    "col:a",
    "content:x",
    "(",
    ")",
    "a & b | !c",
    "<->",
    "a:*",
    "\\",
    "%",
    "_",
    "'; DROP TABLE message; --",
    "\u202e\u200b",
    "\x01\x7f",
    "🙂" * 200,
    "x" * MAX_QUERY,
    "a " * 100,
    "ß İ ǅ ﬁ",
    "\x1c",
    "\ufeff",
    " \u3000a\u3000 ",
    "{}",
    "{0}",
    "$1",
    "?",
]


def _hostile_samples() -> list[str]:
    """Arbitrary text drawn by hypothesis (no shrinking: the test names the failing text)."""
    drawn: list[str] = []
    syntax = st.text(alphabet="\"*^:()-+{}NEAROTDn '\\%_?$.&|!<>~@#", max_size=40)

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.text(max_size=MAX_QUERY + 20), syntax))
    def collect(text: str) -> None:
        drawn.append(text)

    collect()
    return drawn


async def test_no_text_is_a_server_error(live: Live) -> None:
    token, _ = await make_user_session("Fuzzer")
    async with aiohttp.ClientSession() as http:
        await _turn(http, live, token, 'some "quoted" text: with (syntax) * and NEAR ^ words')
        for q in [*HOSTILE, *_hostile_samples()]:
            status, body = await _search(http, live, token, q=q)
            assert status in (200, 400), (q, status, body)
            if status == 400:
                assert body["code"] == "invalid_request" and body["field"] == "q", (q, body)
            # The server accepts exactly the texts the OpenAPI pattern describes.
            assert (status == 200) == bool(re.search(QUERY_PATTERN, q)), (q, status, body)


async def test_bad_parameters_are_400_naming_the_field(live: Live) -> None:
    token, _ = await make_user_session("Params")
    async with aiohttp.ClientSession() as http:
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "q"),
            ({"q": ""}, "q"),
            ({"q": "   "}, "q"),
            ({"q": "x" * (MAX_QUERY + 1)}, "q"),
            ({"q": "a\x00b"}, "q"),
            ({"q": "a", "limit": 0}, "limit"),
            ({"q": "a", "limit": 51}, "limit"),
            ({"q": "a", "limit": "ten"}, "limit"),
            ({"q": "a", "cursor": "garbage"}, "cursor"),
            ({"q": "a", "cursor": "WzEsMl0"}, "cursor"),  # [1,2]
        ]
        for params, field in cases:
            status, body = await _search(http, live, token, **params)
            assert (status, body.get("code"), body.get("field")) == (
                400,
                "invalid_request",
                field,
            ), (params, body)
        status, body = await _search(http, live, token, q=f"  {'y' * MAX_QUERY}  ")
        assert status == 200 and body == {"results": [], "nextCursor": None}
        async with http.get(live.url + "/api/search", params={"q": "a"}) as resp:
            assert resp.status == 401


async def test_the_migration_indexes_rows_stored_before_it(live: Live) -> None:
    token, _ = await make_user_session("Backfill")
    word, title_word = _word(), _word()
    async with aiohttp.ClientSession() as http:
        cid = (await _turn(http, live, token, "rows before the index"))["conversationId"]
        manager = await SEARCH_MIGRATION.forwards()
        await manager.run(backwards=True)  # as before the migration: no index, no triggers
        old = await _insert(cid, "user", f"stored before search existed: {word}")
        await (
            Conversation.update({Conversation.short_title: title_word})
            .where(Conversation.id == cid)
            .run()
        )
        await (await SEARCH_MIGRATION.forwards()).run()
        hits = await _hits(http, live, token, word)
        assert [h["messageId"] for h in hits] == [old]
        assert [h["kind"] for h in await _hits(http, live, token, title_word)] == ["title"]
        # And the triggers are back: a new row is found at once.
        newer = await _insert(cid, "user", f"after: {word}")
        assert {h["messageId"] for h in await _hits(http, live, token, word)} == {old, newer}


async def test_the_index_expression_is_the_migrations() -> None:
    assert SEARCH_MIGRATION.PG_INDEXED_CHARS == PG_INDEXED_CHARS


async def test_fts5_match_quotes_every_word() -> None:
    assert fts5_match('a "b" c*') == '"a" """b""" "c*"'
    assert fts5_match("  ") == ""


async def test_a_long_message_is_stored_and_found(live: Live) -> None:
    """A message past what PostgreSQL indexes (a tsvector is at most 1 MiB) is stored, and
    found by a word of its start."""
    token, _ = await make_user_session("Long")
    word = _word()
    async with aiohttp.ClientSession() as http:
        cid = (await _turn(http, live, token, "long rows"))["conversationId"]
        filler = " ".join(f"{secrets.token_hex(3)}" for _ in range(140_000))  # ~1 MB
        long_id = await _insert(cid, "user", f"{word} {filler}")
        hits = await _hits(http, live, token, word)
        assert [h["messageId"] for h in hits] == [long_id]
        assert len(hits[0]["snippet"]) < 400
