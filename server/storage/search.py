"""Full-text search over one user's messages and conversation titles: the query per engine
(docs/api.md, Search; the indexes are made by migration ``2026-12-07T09:00:00:000000``).

What it owns: turning the user's text into a query that is only ever words (never FTS5 or
tsquery syntax, so no input is a syntax error), ranking, the keyset page after a
``(score, key)`` position, the snippets and whether a message is on its conversation's
active path. Who may search is the route's business; this module filters every hit by the
conversation's ``user_id`` on the live rows (the index only finds candidates).

- SQLite: FTS5 ``MATCH`` with each word a quoted phrase (implicit AND), snippets from
  ``snippet()``/``highlight()``, ranked by :data:`_SQLITE_SCORE`: BM25's term-frequency
  part with a fixed average length, and without its IDF. FTS5's own ``bm25()`` weighs
  words by how many rows of the *whole* table hold them — every user's messages — so its
  value, and the order of a several-word search, would tell a user something about other
  users' text; and it changes with every write anywhere, which would move rows between
  pages. This score depends on the row alone.
- PostgreSQL: ``plainto_tsquery('simple', …)`` (plain words, ANDed; no operators),
  ``ts_rank`` (negated, so lower is better on both engines), ``ts_headline`` computed for
  the page's rows only.

Both scores depend only on the row and the query (never on other rows), so a cursor is
stable while the rows do not change; they are compared only within one engine. A page is
ordered by ``(score, key)``; the key (``m:<message id>`` or ``t:<conversation id>``) breaks
ties, so the order is total and a cursor ``(score, key)`` resumes exactly after the last
row shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actors.clock import as_utc, parse_iso
from server.storage.tables import Message

#: Matched words are wrapped in these (documented in docs/api.md, Search).
MARK_OPEN = "«"
MARK_CLOSE = "»"
#: How much of a message PostgreSQL indexes: the expression of the migration's index,
#: repeated here (an expression index serves only the identical expression).
PG_INDEXED_CHARS = 100_000
#: Snippet size: SQLite counts tokens, PostgreSQL words.
SNIPPET_TOKENS = 16

_PG_DOC = f"to_tsvector('simple', left(m.content, {PG_INDEXED_CHARS}))"
_PG_TITLE = "to_tsvector('simple', c.short_title)"
_PG_QUERY = "plainto_tsquery('simple', {})"
_PG_MESSAGE_HEADLINE = (
    f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, MaxWords=20, MinWords=8, "
    'MaxFragments=2, FragmentDelimiter=" … "'
)
_PG_TITLE_HEADLINE = f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, HighlightAll=true"

#: BM25's saturation of the number of matches ``tf`` over the text's length ``size`` (k1 =
#: 1.2, b = 0.75, an average of 400 characters), negated: lower is better. ``tf`` is
#: counted by ``highlight()`` marking each match with one U+0001 (``length(marked) -
#: length(text)``), once per row (the rows are materialized before the score is taken).
_SQLITE_SCORE = "-(tf * 1.0 / (tf + 1.2 * (0.25 + 0.75 * size / 400.0)))"
_SQLITE_TF = "length(highlight({table}, 0, char(1), '')) - length({text})"

_SQLITE_HITS = f"""
SELECT 'm:' || m.id AS key, m.id AS message_id, m.role AS role, m.created_at AS created_at,
       c.id AS conversation_id, c.short_title AS title, c.active_leaf_id AS active_leaf_id,
       snippet(message_search, 0, '{MARK_OPEN}', '{MARK_CLOSE}', '…', {SNIPPET_TOKENS})
           AS snippet,
       {_SQLITE_TF.format(table="message_search", text="m.content")} AS tf,
       length(m.content) AS size
FROM message_search
JOIN message m ON m.rowid = message_search.rowid
JOIN conversation c ON c.id = m.conversation_id
WHERE message_search MATCH {{}} AND c.user_id = {{}}
UNION ALL
SELECT 't:' || c.id, NULL, NULL, c.created_at, c.id, c.short_title, c.active_leaf_id,
       highlight(conversation_search, 0, '{MARK_OPEN}', '{MARK_CLOSE}'),
       {_SQLITE_TF.format(table="conversation_search", text="c.short_title")},
       length(c.short_title)
FROM conversation_search
JOIN conversation c ON c.rowid = conversation_search.rowid
WHERE conversation_search MATCH {{}} AND c.user_id = {{}}
"""  # noqa: S608 (constants only; the user's text is a bound parameter)

_PG_HITS = f"""
SELECT 'm:' || m.id AS key, m.id AS message_id, m.role AS role, m.created_at AS created_at,
       c.id AS conversation_id, c.short_title AS title, c.active_leaf_id AS active_leaf_id,
       left(m.content, {PG_INDEXED_CHARS}) AS body,
       (-ts_rank({_PG_DOC}, {_PG_QUERY}))::float8 AS score
FROM message m JOIN conversation c ON c.id = m.conversation_id
WHERE c.user_id = {{}} AND {_PG_DOC} @@ {_PG_QUERY}
UNION ALL
SELECT 't:' || c.id, NULL, NULL, c.created_at, c.id, c.short_title, c.active_leaf_id,
       c.short_title, (-ts_rank({_PG_TITLE}, {_PG_QUERY}))::float8
FROM conversation c
WHERE c.user_id = {{}} AND {_PG_TITLE} @@ {_PG_QUERY}
"""  # noqa: S608 (constants only; the user's text is a bound parameter)

_AFTER = "WHERE score > {} OR (score = {} AND key > {})"


@dataclass(frozen=True)
class Hit:
    """One result: a message (``message_id`` set) or a conversation's title."""

    key: str
    score: float
    conversation_id: str
    title: str
    snippet: str
    created_at: datetime
    message_id: str | None = None
    role: str | None = None
    on_active_path: bool | None = None


def words(text: str) -> list[str]:
    """The user's text as words: split on whitespace, nothing else interpreted."""
    return text.split()


def fts5_match(text: str) -> str:
    """An FTS5 ``MATCH`` expression that is only words: each whitespace-separated piece a
    quoted phrase (``"`` doubled inside), the pieces ANDed. FTS5 tokenizes inside the
    quotes with the table's tokenizer, so ``foo-bar`` is the phrase "foo bar" and a piece
    of punctuation alone an empty phrase, which is ignored: no text is a syntax error."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words(text))


async def search(
    user_id: str, text: str, *, limit: int, after: tuple[float, str] | None = None
) -> tuple[list[Hit], bool]:
    """The user's best hits for ``text`` after the position ``after``: at most ``limit``,
    and whether more follow."""
    if not words(text):
        return [], False
    sqlite = Message._meta.db.engine_type == "sqlite"
    args: list[Any]
    if sqlite:
        match = fts5_match(text)
        hits, args = _SQLITE_HITS, [match, user_id, match, user_id]
    else:
        hits, args = _PG_HITS, [text, user_id, text, text, user_id, text]
    where = ""
    if after is not None:
        where = _AFTER
        args += [after[0], after[0], after[1]]
    if sqlite:
        hits = (
            f"WITH raw AS MATERIALIZED ({hits}) "  # noqa: S608
            f"SELECT *, {_SQLITE_SCORE} AS score FROM raw"
        )
    page = f"SELECT * FROM ({hits}) AS hit {where} ORDER BY score, key LIMIT {{}}"  # noqa: S608
    args.append(limit + 1)
    if not sqlite:
        page = (
            f"SELECT page.*, ts_headline('simple', body, {_PG_QUERY}, "  # noqa: S608
            f"CASE WHEN message_id IS NULL THEN '{_PG_TITLE_HEADLINE}' "
            f"ELSE '{_PG_MESSAGE_HEADLINE}' END) AS snippet "
            f"FROM ({page}) AS page ORDER BY score, key"
        )
        args.insert(0, text)  # the headline's query comes first in the text
    rows: list[dict[str, Any]] = await Message.raw(page, *args).run()
    more = len(rows) > limit
    rows = rows[:limit]
    paths = await _active_paths(rows)
    return [_hit(row, paths) for row in rows], more


def _hit(row: dict[str, Any], paths: dict[str, set[str]]) -> Hit:
    created = row["created_at"]
    message_id = row["message_id"]
    return Hit(
        key=str(row["key"]),
        score=float(row["score"]),
        conversation_id=str(row["conversation_id"]),
        title=str(row["title"] or ""),
        snippet=str(row["snippet"] or "").strip(),
        created_at=parse_iso(created) if isinstance(created, str) else as_utc(created),
        message_id=message_id,
        role=row["role"],
        on_active_path=(
            None
            if message_id is None
            else message_id in paths.get(str(row["conversation_id"]), set())
        ),
    )


async def _active_paths(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The active path (root → active leaf) of each conversation a message hit is in: one
    query for the page's conversations, walked here."""
    leaves = {
        str(row["conversation_id"]): row["active_leaf_id"]
        for row in rows
        if row["message_id"] is not None
    }
    if not leaves:
        return {}
    parents: dict[str, dict[str, str | None]] = {cid: {} for cid in leaves}
    found = await (
        Message.select(Message.id, Message.parent_id, Message.conversation_id)
        .where(Message.conversation_id.is_in(list(leaves)))
        .run()
    )
    for message in found:
        parents[str(message["conversation_id"])][str(message["id"])] = message["parent_id"]
    paths: dict[str, set[str]] = {}
    for cid, leaf in leaves.items():
        path: set[str] = set()
        node = leaf
        while node is not None and node not in path and node in parents[cid]:
            path.add(node)
            node = parents[cid][node]
        paths[cid] = path
    return paths
