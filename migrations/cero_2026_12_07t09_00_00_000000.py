"""Full-text search (issue 24): an index over every message's text and every
conversation's title, and the rows already stored put into it (docs/api.md, Search).

- **PostgreSQL**: two expression GIN indexes, ``to_tsvector('simple', …)``. An index
  rather than a stored generated column: no table rewrite, no column Piccolo does not
  know, and every ``UPDATE`` — the batch writer's raw ones included — keeps it current
  with nothing more. Building the index is the backfill. The ``simple`` configuration (no
  stemming, no stop words) because users write in every language: ``english`` would stem
  other languages' words wrongly and drop words such as "the" or "who" from the index, so
  a search for them would find nothing; ``simple`` also finds what SQLite's ``unicode61``
  tokenizer finds (words, lower-cased, unstemmed). A message is indexed up to its first
  :data:`PG_INDEXED_CHARS` characters: a ``tsvector`` is at most 1 MiB, and
  ``to_tsvector`` of a ~1 MB message of distinct words fails ("string is too long for
  tsvector") — with an unbounded index expression that would fail the message's
  ``INSERT``. ``server/storage/search.py`` repeats the same expressions (the index is
  only used for the identical expression).
- **SQLite**: two FTS5 tables with external content (``content='message'``, keyed on the
  row's ``rowid``: the text is not stored twice), tokenizer ``unicode61
  remove_diacritics 2`` (case and diacritics folded: "Café" finds "cafe"), kept in sync
  by triggers on insert, delete and ``UPDATE OF`` the text (the batch writer's partial
  flushes too; a conversation's cascade delete fires the message trigger). ``rebuild``
  fills each from the rows already stored. If a ``VACUUM`` ever renumbered the implicit
  rowids the index could drift; ``INSERT INTO message_search(message_search)
  VALUES('rebuild')`` (and ``conversation_search``) rebuilds it, and results are always
  joined back to the live rows and filtered by user there, never read from the index.

Raw statements run before a migration's table operations, so this is a migration of its
own.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-07T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "full-text search: FTS5 tables and triggers (SQLite), GIN indexes (PostgreSQL)"

#: How much of a message PostgreSQL indexes (see above); server/storage/search.py uses it.
PG_INDEXED_CHARS = 100_000

_TOKENIZER = "unicode61 remove_diacritics 2"

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS message_search USING fts5(content, "
    f"content='message', content_rowid='rowid', tokenize='{_TOKENIZER}')",
    "CREATE TRIGGER IF NOT EXISTS message_search_insert AFTER INSERT ON message BEGIN "
    "INSERT INTO message_search(rowid, content) VALUES (new.rowid, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS message_search_delete AFTER DELETE ON message BEGIN "
    "INSERT INTO message_search(message_search, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); END",
    "CREATE TRIGGER IF NOT EXISTS message_search_update AFTER UPDATE OF content ON message "
    "BEGIN INSERT INTO message_search(message_search, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO message_search(rowid, content) VALUES (new.rowid, new.content); END",
    "INSERT INTO message_search(message_search) VALUES ('rebuild')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS conversation_search USING fts5(short_title, "
    f"content='conversation', content_rowid='rowid', tokenize='{_TOKENIZER}')",
    "CREATE TRIGGER IF NOT EXISTS conversation_search_insert AFTER INSERT ON conversation "
    "BEGIN INSERT INTO conversation_search(rowid, short_title) "
    "VALUES (new.rowid, new.short_title); END",
    "CREATE TRIGGER IF NOT EXISTS conversation_search_delete AFTER DELETE ON conversation "
    "BEGIN INSERT INTO conversation_search(conversation_search, rowid, short_title) "
    "VALUES ('delete', old.rowid, old.short_title); END",
    "CREATE TRIGGER IF NOT EXISTS conversation_search_update "
    "AFTER UPDATE OF short_title ON conversation BEGIN "
    "INSERT INTO conversation_search(conversation_search, rowid, short_title) "
    "VALUES ('delete', old.rowid, old.short_title); "
    "INSERT INTO conversation_search(rowid, short_title) "
    "VALUES (new.rowid, new.short_title); END",
    "INSERT INTO conversation_search(conversation_search) VALUES ('rebuild')",
)

_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS message_search_insert",
    "DROP TRIGGER IF EXISTS message_search_delete",
    "DROP TRIGGER IF EXISTS message_search_update",
    "DROP TABLE IF EXISTS message_search",
    "DROP TRIGGER IF EXISTS conversation_search_insert",
    "DROP TRIGGER IF EXISTS conversation_search_delete",
    "DROP TRIGGER IF EXISTS conversation_search_update",
    "DROP TABLE IF EXISTS conversation_search",
)

_PG_UP = (
    "CREATE INDEX IF NOT EXISTS message_search ON message USING gin "
    f"(to_tsvector('simple', left(content, {PG_INDEXED_CHARS})))",
    "CREATE INDEX IF NOT EXISTS conversation_search ON conversation USING gin "
    "(to_tsvector('simple', short_title))",
)

_PG_DOWN = (
    "DROP INDEX IF EXISTS message_search",
    "DROP INDEX IF EXISTS conversation_search",
)


async def _run(sqlite: tuple[str, ...], postgres: tuple[str, ...]) -> None:
    engine = engine_finder()
    assert engine is not None
    for statement in sqlite if engine.engine_type == "sqlite" else postgres:
        await engine.run_ddl(statement)


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="cero", description=DESCRIPTION)

    async def create() -> None:
        await _run(_SQLITE_UP, _PG_UP)

    async def drop() -> None:
        await _run(_SQLITE_DOWN, _PG_DOWN)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
