"""Database engines: pick one from ``DATABASE_URL``, migrate, ping, pool lifecycle.

Piccolo binds tables to an engine lazily through ``piccolo_conf.DB``; :func:`use_engine`
points every table (ours and Piccolo's migration table) at the engine an app was created
with, so one process (or one test run) can serve SQLite and PostgreSQL in turn.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import structlog
from aiohttp import web
from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine as _Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType

from actors.api import StoreUnavailable
from server.storage.sqlite_engine import PooledSQLiteEngine
from server.storage.tables import TABLES

log = structlog.get_logger(__name__)

Engine: TypeAlias = _Engine[Any]

#: The app's engine (bound once where the process starts: :func:`bound_engine`).
ENGINE: web.AppKey[Engine] = web.AppKey("engine")

#: The default bound on a wait for the database's locks (``CERO_DB_WRITE_TIMEOUT`` sets
#: it in the server). It was 30 s: a held SQLite write lock then kept every Piccolo write
#: (sign-in, conversation create) and its aiosqlite thread waiting 30 s before a 500.
SQLITE_BUSY_TIMEOUT_S = 5.0
#: Start-up (WAL mode, migrations) may wait longer for another process's lock.
STARTUP_BUSY_TIMEOUT_S = 30.0


def engine_for_url(url: str, *, lock_timeout: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    """``sqlite:///rel`` / ``sqlite:////abs`` → SQLite; ``postgresql://`` → PostgreSQL.

    ``lock_timeout`` bounds every wait for a lock: SQLite's busy timeout, PostgreSQL's
    ``lock_timeout`` (a table locked by another session fails the statement with
    ``LockNotAvailableError`` instead of waiting forever). Either failure is a
    ``503 not_ready`` (:func:`is_unavailable`)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")  # never lstrip: "/abs" must stay absolute
        return PooledSQLiteEngine(path=path, timeout=lock_timeout)
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    lock_ms = str(max(1, round(lock_timeout * 1000)))
    return PostgresEngine(config={"dsn": url, "server_settings": {"lock_timeout": lock_ms}})


def lock_timeout(settings: Any) -> float:
    """The bound on a Piccolo statement's wait for a lock: the batch writer's own bound on
    a caller's wait (``2 × CERO_DB_WRITE_TIMEOUT + 1``), so a sign-in or a conversation
    create waits no less than a chat's writes do, behind the same group commits."""
    return 2 * float(settings.db_write_timeout) + 1.0


_SQLITE_UNAVAILABLE = ("locked", "busy", "disk i/o", "unable to open", "readonly", "full")


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot serve now (locked, down, unreachable, a bounded wait expired),
    as opposed to a statement that is wrong (a missing table, a duplicate key): only the
    first is a ``503 not_ready`` worth retrying, never a ``500``. The one classification,
    for the batch writer and for every request.

    ``InternalClientError`` is a connection the server ended while it sat idle (issue 20:
    backends terminated every 0.25 s answered ``500 internal``). PostgreSQL sends the
    backend's last words (``FATAL: terminating connection``) before it closes the socket;
    asyncpg reads them on an idle connection as a protocol error and parks the protocol in
    its error-consume state until the close arrives, one loop turn or more later. A query
    sent in between fails with "cannot switch to state N; another operation (2) is in
    progress" before a byte is sent: operation 2 is that state, not a second coroutine.
    Measured on asyncpg 0.32: 48 of 200 such connections failed this way, the others with
    ``ConnectionDoesNotExistError``."""
    import asyncpg

    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return False  # a client that went away (aiohttp's ClientConnectionResetError)
    if isinstance(exc, StoreUnavailable | TimeoutError | OSError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(word in text for word in _SQLITE_UNAVAILABLE)
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.CannotConnectNowError
        | asyncpg.OperatorInterventionError
        | asyncpg.TooManyConnectionsError
        | asyncpg.LockNotAvailableError,
    )


@contextlib.asynccontextmanager
async def write_transaction(engine: Engine) -> AsyncIterator[Any]:
    """A transaction for read-then-write or multi-row writes: ``BEGIN IMMEDIATE`` on
    SQLite (deferred ones fail with "database is locked" under concurrency).

    Piccolo's SQLite transaction opens its connection and then sends ``BEGIN``; when the
    ``BEGIN`` fails (the write lock held past the busy timeout) it never closes that
    connection, and its non-daemon aiosqlite thread then keeps the process from exiting.
    So a failed begin closes the connection here.
    """
    if not isinstance(engine, SQLiteEngine):
        async with engine.transaction() as tx:
            yield tx
        return
    tx = engine.transaction(transaction_type=TransactionType.immediate)
    if tx._parent is not None:  # nested: the outer transaction owns the connection
        yield await tx.__aenter__()
        return
    try:
        entered = await tx.__aenter__()
    except BaseException:
        await _close_sqlite_tx(tx)
        raise
    # Piccolo's __aexit__ closes the connection only when its COMMIT or ROLLBACK
    # succeeds: a COMMIT that meets a locked database leaked the connection and its
    # thread too. So the connection is closed here whatever the exit did.
    try:
        yield entered
    except BaseException as exc:
        try:
            await tx.__aexit__(type(exc), exc, exc.__traceback__)
        finally:
            await _close_sqlite_tx(tx)
        raise
    else:
        try:
            await tx.__aexit__(None, None, None)
        finally:
            await _close_sqlite_tx(tx)


async def _close_sqlite_tx(tx: Any) -> None:
    """Close a Piccolo SQLite transaction's connection (again: closing twice is harmless)
    and leave its context, so no aiosqlite thread outlives a failed transaction."""
    connection = getattr(tx, "connection", None)
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.close()
    context = getattr(tx, "context", None)
    if context is not None:
        with contextlib.suppress(ValueError, RuntimeError):
            tx.engine.current_transaction.reset(context)


UNBOUND = (
    "no database engine is bound: the process binds one where it starts "
    "(server.storage.db.bind, as `cero-api serve|migrate` and the test fixtures do)"
)


class UnboundEngine(SQLiteEngine):
    """``piccolo_conf.DB`` until the process binds the real engine: every use fails loudly,
    instead of quietly opening ``./cero.db`` as a fallback would."""

    def __init__(self) -> None:
        super().__init__(path=":unbound:")

    async def run_querystring(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(UNBOUND)

    async def run_ddl(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(UNBOUND)

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(UNBOUND)

    async def get_connection(self) -> Any:
        raise RuntimeError(UNBOUND)


def use_engine(engine: Engine) -> None:
    """Bind every table, and Piccolo's migration machinery, to ``engine``."""
    import piccolo_conf

    piccolo_conf.DB = engine
    for table in (*TABLES, Migration):
        table._meta.db = engine  # type: ignore[attr-defined]


def bind(database_url: str, *, lock_timeout: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    """Create the engine for ``database_url`` and bind the tables to it: once, where the
    process starts (the CLI, a test fixture)."""
    engine = engine_for_url(database_url, lock_timeout=lock_timeout)
    use_engine(engine)
    return engine


def bound_engine() -> Engine:
    import piccolo_conf

    engine: Engine = piccolo_conf.DB
    if isinstance(engine, UnboundEngine):
        raise RuntimeError(UNBOUND)
    return engine


SQLITE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """Create the database file owner-only (like the secret file), whatever the umask, and
    tighten an existing one and its side files. SQLite gives the ``-wal``, ``-shm`` and
    ``-journal`` files it creates the permission bits of the database file."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, SQLITE_FILE_MODE))
    for file in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        try:
            if file.stat().st_mode & 0o777 != SQLITE_FILE_MODE:
                file.chmod(SQLITE_FILE_MODE)  # the umask may have taken bits off, too
        except FileNotFoundError:
            pass
        except PermissionError:  # another user's file: usable, but not ours to change
            log.warning("sqlite_file_mode_unchanged", path=str(file))


def prepare_sqlite(engine: Engine) -> None:
    """WAL mode is a property of the file: set it once, before the first connection."""
    if isinstance(engine, SQLiteEngine):
        path = Path(engine.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(path)
        with contextlib.closing(sqlite3.connect(path, timeout=STARTUP_BUSY_TIMEOUT_S)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")


#: The Piccolo app of the server's own tables (server/storage/piccolo_app.py). The
#: registry (piccolo_conf.py) also holds Piccolo's ``user`` and piccolo_api's
#: ``session_auth`` apps: the database studio's operators and their sessions, migrated
#: only by the studio's commands (server/studio/operators.py), never by ``serve``.
APP = "cero"


async def migrate(engine: Engine, apps: Sequence[str] = (APP,)) -> list[str]:
    """Apply every pending migration of ``apps`` (Piccolo app names, in order) to
    ``engine``; return the ids applied."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    if engine is not bound_engine():
        raise RuntimeError("migrate() runs on the bound engine (server.storage.db.bind)")
    prepare_sqlite(engine)
    async with _migration_lock(engine):
        before = await _applied()
        for app in apps:
            # Piccolo's migration runner prints its progress; keep it out of our stdout
            # and logs.
            with contextlib.redirect_stdout(io.StringIO()) as out:
                result = await run_forwards(app_name=app, migration_id="all", fake=False)
            if not result.success:
                raise RuntimeError(
                    f"migrations of {app} failed: {result.message}: {out.getvalue()[-500:]}"
                )
        applied = [m for m in await _applied() if m not in before]
    if applied:
        log.info("migrations_applied", migrations=applied)
    return applied


#: ``pg_advisory_lock`` key held while migrating ("cero" in ASCII).
MIGRATION_LOCK_KEY = 0x6365726F


@contextlib.asynccontextmanager
async def _migration_lock(engine: Engine) -> AsyncIterator[None]:
    """On PostgreSQL, one process migrates at a time: N processes of a cluster starting
    together on a fresh database otherwise race (measured: 2 of 3 concurrent
    ``cero-api migrate`` failed with DuplicateTableError / UniqueViolationError). The lock
    is held on a connection of its own; the migrations run on the engine's as usual."""
    if not isinstance(engine, PostgresEngine):
        yield
        return
    import asyncpg

    conn = await asyncpg.connect(engine.config["dsn"])
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def _applied() -> list[str]:
    if not await Migration.table_exists().run():
        return []
    rows: list[dict[str, Any]] = await Migration.select(Migration.name).run()
    return [str(row["name"]) for row in rows]


async def ping(engine: Engine) -> None:
    """Raise when the database does not answer a trivial query."""
    await engine.run_ddl("SELECT 1")


#: The tables every chat and sign-in writes: readiness takes the lock a write takes.
_WRITTEN_TABLES = "message, conversation, session"


async def check_writes(engine: Engine, writer: Any = None) -> None:
    """Raise when the database does not take a write now (the caller bounds the wait).

    SQLite: ``writer.probe()`` (the batch writer's empty ``BEGIN IMMEDIATE`` ... ``COMMIT``,
    so a held write lock fails it). PostgreSQL: take the row-exclusive lock every
    ``INSERT``/``UPDATE`` takes on the written tables, ``NOWAIT``, in a transaction that
    writes nothing: a session holding ``LOCK TABLE message`` (or a schema change) fails it
    at once, and a server that does not answer fails the timeout."""
    if isinstance(engine, SQLiteEngine):
        if writer is not None:
            await writer.probe()
        else:
            async with write_transaction(engine):
                pass
        return
    assert isinstance(engine, PostgresEngine)
    pool = engine.pool
    if pool is None:
        await engine.run_ddl("SELECT 1")
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"LOCK TABLE {_WRITTEN_TABLES} IN ROW EXCLUSIVE MODE NOWAIT")


async def start_pool(engine: Engine, max_size: int = 20) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(
            min_size=1, max_size=max_size, reset=_keep_session_settings
        )


async def _keep_session_settings(conn: Any) -> None:
    """The pool's reset of a released connection, after asyncpg's own (which rolls back
    an open transaction): nothing more. asyncpg's default adds ``RESET ALL``, ``UNLISTEN``,
    ``CLOSE ALL`` and an advisory unlock — a round trip before every query's caller gets
    its rows — to undo session state this server never sets (no ``SET``, ``LISTEN``,
    cursors or advisory locks outside a transaction). Measured in benchmark scenario 4:
    the session lookup of each request paid it (auth 0.9–1.25 ms p50 on PostgreSQL
    against 0.65–0.7 on SQLite)."""


async def close_pool(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        if engine.pool is not None:  # else Piccolo warns "No pool is running."
            await engine.close_connection_pool()
    elif isinstance(engine, PooledSQLiteEngine):
        engine.close()
