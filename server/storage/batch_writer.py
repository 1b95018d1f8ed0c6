"""Group commit for the conversation hot path: turn starts, partial flushes, terminal states.

Why not one Piccolo transaction per write (measured, ``bench`` scenario 2 on SQLite, 200
conversations starting an answer at once, main at 6515005): each transaction opened its
own aiosqlite connection and thread, and 200 ``BEGIN IMMEDIATE`` busy-polled the file lock
with no order among them. The 400 transactions held the lock for 19.7 s in all (49 ms
each: every statement is a thread hop that waits for a turn of an event loop busy with 200
model streams) and waited 1,687 s in all, up to 24 s each; past the 30 s busy timeout a
send failed with ``database is locked``. Starting the 200 answers took 18 s, longer than
the answers themselves, which is the "0 deliveries" stall of issue 14.

So every write of the hot path goes through one queue. One task takes everything queued,
writes it in one transaction with one ``executemany`` per statement kind, and resolves
the callers' futures after the commit; what arrives meanwhile forms the next batch. On
SQLite the whole batch is one call into a dedicated writer thread with its own
connection (one thread hop per batch, not per statement); on PostgreSQL it is one pooled
asyncpg connection and one transaction. A batch that fails is retried one operation at a
time, so one bad row (a duplicate idempotency key) fails only its own caller.

Every wait is bounded by ``timeout`` (``CERO_DB_WRITE_TIMEOUT``): past it the caller gets
:class:`~actors.store.StoreUnavailable` (``503 not_ready`` on HTTP) instead of a hang.

Why one module of ~730 lines: the queue, the batch's statements and the three ways a batch
reaches the disk (SQLite on the loop for a small batch with the lock free, SQLite in the
writer thread, PostgreSQL on the writer's connection) share one invariant — every caller is
resolved exactly once, after its commit or with its error, in queue order — and the
fencing of cluster mode and the phase timers cross all three. Split, each part would
reach into the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import orjson
import structlog
from aiohttp import web
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from actors.api import Observe, Outcome, StoredMessage, StoreUnavailable
from actors.clock import utcnow
from server.storage.db import is_unavailable

log = structlog.get_logger(__name__)

#: Operations taken into one transaction at most (PostgreSQL allows 32,767 parameters
#: per statement, but executemany binds one row at a time, so this only bounds latency).
MAX_BATCH = 1000

Kind = Literal["turn", "resume", "leaf", "append", "finish", "stop", "interrupt", "probe"]


@dataclass(slots=True)
class _Op:
    kind: Kind
    rows: list[tuple[Any, ...]]
    #: ``(updated_at, active leaf, conversation id)`` for ``turn`` and ``resume``
    touched: list[tuple[Any, ...]] = field(default_factory=list)
    future: asyncio.Future[None] | None = None
    #: The caller gave up waiting while the op was already being written.
    abandoned: bool = False
    #: ``time.perf_counter()`` when it was queued (for ``turn_queued``).
    submitted: float = 0.0
    #: What an ``interrupt`` took over: ``(message id, generation id)`` per row.
    returned: list[tuple[Any, ...]] = field(default_factory=list)


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class BatchWriter:
    """One writer per process and engine; see the module docstring."""

    def __init__(self, engine: Any, *, timeout: float = 5.0) -> None:
        self.engine = engine
        self.timeout = timeout
        self.sqlite = isinstance(engine, SQLiteEngine)
        self.batches = 0
        self.ops = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._queue: list[_Op] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: answer id → the fencing token its row was inserted with (cluster mode; absent
        #: means 0, one process): every later update of the row is conditional on it.
        self._fences: dict[str, int] = {}
        #: SQLite: the connection for small batches written on the loop (see _commit).
        self._inline: sqlite3.Connection | None = None
        self._inline_since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None
        #: PostgreSQL: the writer's own pooled connection, held while it works (see
        #: _postgres_commit).
        self._pg: Any = None
        #: Phase observer (``cero_turn_phase_seconds``): for batches holding a turn start,
        #: ``turn_queued`` per turn and the transaction's steps (``db_*``).
        self.on_phase: Observe | None = None
        #: Metrics hook: each transaction's duration in seconds and whether it committed
        #: (a failed batch is then retried one operation at a time; each try is one call).
        self.on_commit: Callable[[float, bool], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.sqlite:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-writer")

    async def close(self) -> None:
        """Write what is queued (bounded by ``timeout``), then release the connection."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.timeout + 1.0)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        self._fail_queue(StoreUnavailable("the server is shutting down"))
        await self._drop_postgres()
        if self._checkpoint is not None:
            with contextlib.suppress(BaseException):
                await self._checkpoint
        self._close_inline()
        if self._executor is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sqlite)
            self._executor.shutdown(wait=False)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- the operations ----------------------------------------------------------------

    async def start_generation(
        self,
        user: StoredMessage,
        answer: StoredMessage,
        *,
        user_id: str | None = None,
        fence: int = 0,
        regenerate: bool = False,
    ) -> None:
        """``user_id`` goes on the row that carries the ``clientMessageId`` (the user
        message; a regenerate's answer) only: the unique index on ``(user_id,
        client_message_id)`` makes the key unique per user. ``fence`` (cluster mode) is the
        lease's token: updates of the answer row carry it. ``regenerate``: ``user`` is
        stored already, only the answer is inserted. The answer becomes the active leaf."""
        if regenerate:
            rows = [_message_row(answer, user_id, fence)]
        else:
            rows = [_message_row(user, user_id, fence), _message_row(answer, None, fence)]
        if fence:
            self._fences[answer.id] = fence
        touched = [(answer.created_at, answer.id, answer.conversation_id)]
        await self._submit(_Op("turn", rows, touched=touched))

    async def continue_generation(
        self,
        conversation_id: str,
        message_id: str,
        generation_id: str,
        *,
        client_message_id: str | None = None,
        user_id: str | None = None,
        fence: int = 0,
    ) -> None:
        """An answer that stopped early streams again under ``generation_id``, its text
        kept (the flushes append to it); it becomes the active leaf."""
        now = utcnow()
        if fence:
            self._fences[message_id] = fence
        row = (generation_id, fence, client_message_id, user_id, now, message_id)
        await self._submit(_Op("resume", [row], touched=[(now, message_id, conversation_id)]))

    async def set_active_leaf(self, conversation_id: str, message_id: str) -> None:
        await self._submit(_Op("leaf", [(message_id, conversation_id)]))

    def fence_of(self, message_id: str) -> int:
        return self._fences.get(message_id, 0)

    # -- partial answers, by suffix ------------------------------------------------------

    async def append_partials(self, batch: Sequence[tuple[str, int, str]]) -> None:
        """``(message id, chars already stored, new text)``: the row keeps its first
        ``chars`` characters and gains the new text, so a streaming answer costs its new
        tokens per flush instead of its whole text again (issue 15 item 13: 40 answers of
        1 MiB rewrote ~200 MB per round and churned the allocator). Idempotent: a retry
        after a commit the caller did not see writes the same content."""
        now = utcnow()
        fence = self.fence_of
        rows = [(chars, suffix, now, mid, fence(mid)) for mid, chars, suffix in batch]
        await self._submit(_Op("append", rows))

    async def finish(self, message_id: str, outcome: Outcome) -> None:
        row = (
            outcome.content,
            outcome.status,
            outcome.finish_reason,
            _json(outcome.usage),
            _json(outcome.citations),
            _json(outcome.tools),
            utcnow(),
            message_id,
            self.fence_of(message_id),
        )
        await self._submit(_Op("finish", [row]))

    async def take_over(self, conversation_id: str, fence: int) -> list[tuple[str, str]]:
        """Cluster mode, a lease taken over: the conversation's ``streaming`` rows become
        ``interrupted`` under the new lease's ``fence`` (so the old owner's later writes,
        fenced with its own token, change nothing). Returns ``(message id, generation
        id)`` of each row it marked. Queued like every write, after what was queued
        before it."""
        op = _Op("interrupt", [(fence, utcnow(), conversation_id)])
        await self._submit(op)
        return [(str(mid), str(gid)) for mid, gid in op.returned]

    async def probe(self) -> None:
        """A write transaction that changes nothing: proves the database takes writes."""
        await self._submit(_Op("probe", []))

    async def _submit(self, op: _Op) -> None:
        if self._closed:
            raise StoreUnavailable("the server is shutting down")
        op.future = asyncio.get_running_loop().create_future()
        op.submitted = time.perf_counter()
        self._queue.append(op)
        self._wake.set()
        try:
            async with asyncio.timeout(self.timeout * 2 + 1.0):
                await asyncio.shield(op.future)
        except TimeoutError:
            if op in self._queue:
                self._queue.remove(op)  # not begun: nothing of it will be written
            else:
                op.abandoned = True  # in flight: undone below if it commits after all
            raise StoreUnavailable(
                f"the database did not take the write within {self.timeout * 2 + 1:g} s"
            ) from None

    # -- the writer task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            started = time.perf_counter()
            steps: list[tuple[str, float]] | None = None
            if self.on_phase is not None and any(op.kind == "turn" for op in batch):
                steps = [
                    ("turn_queued", started - op.submitted) for op in batch if op.kind == "turn"
                ]
            try:
                await self._commit(batch, steps)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    self._fail(batch, StoreUnavailable("the writer stopped"))
                    raise
                self._timed(started, ok=False)
                if len(batch) == 1:
                    self._fail(batch, exc)
                else:
                    for op in batch:  # one bad operation fails only its own caller
                        alone = time.perf_counter()
                        try:
                            await self._commit([op])
                        except Exception as one:
                            self._timed(alone, ok=False)
                            self._fail([op], one)
                        else:
                            self._timed(alone, ok=True)
                            self._done([op])
                continue
            self._timed(started, ok=True)
            self._done(batch)
            if steps is not None and self.on_phase is not None:
                steps.append(("db_batch", time.perf_counter() - started))
                for phase, seconds in steps:
                    self.on_phase(phase, seconds)
            log.debug(
                "batch_written", ops=len(batch), ms=round((time.perf_counter() - started) * 1e3, 2)
            )

    def _timed(self, started: float, *, ok: bool) -> None:
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, ok)

    def _done(self, batch: list[_Op]) -> None:
        self.batches += 1
        self.ops += len(batch)
        for op in batch:
            if op.kind == "finish":
                for row in op.rows:
                    self._fences.pop(row[-2], None)
            if op.abandoned and op.kind in ("turn", "resume"):
                # The caller was answered 503 and no generation runs: the answer row that
                # committed late must not stay `streaming`.
                self._compensate(op)
        self.last_ok = time.monotonic()
        self.last_error = None
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_result(None)

    def _compensate(self, op: _Op) -> None:
        """A turn its caller was told failed: if its rows exist after all (a commit whose
        answer was lost to a timeout), the answer row is marked ``error``; if they do not,
        the update changes nothing."""
        if op.kind == "resume":
            # A continued answer keeps its text: it only stops streaming.
            generation_id, _, _, _, _, message_id = op.rows[0]
            self._queue.append(_Op("stop", [(utcnow(), message_id, generation_id)]))
            self._wake.set()
            return
        answer_id = op.rows[-1][0]
        row = ("", "error", None, None, None, None, utcnow(), answer_id, self.fence_of(answer_id))
        self._queue.append(_Op("finish", [row]))
        self._wake.set()

    def _fail(self, batch: list[_Op], exc: BaseException) -> None:
        if is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("batch_write_failed", ops=len(batch), error=self.last_error)
            exc = StoreUnavailable(f"the database did not take the write ({type(exc).__name__})")
        for op in batch:
            if op.kind in ("turn", "resume") and not self._closed:
                self._compensate(op)
            if op.future is not None and not op.future.done():
                op.future.set_exception(exc)
                op.future.exception()  # retrieved: a caller that gave up is not an error

    def _fail_queue(self, exc: BaseException) -> None:
        queued, self._queue = self._queue, []
        self._fail(queued, exc)

    async def _commit(self, batch: list[_Op], steps: list[tuple[str, float]] | None = None) -> None:
        """``steps``, when given, gets the time of each step of the transaction.

        Small SQLite batches (the low-load case: one turn start, one terminal state) are
        written on the event loop's thread when the write lock is free at once: the
        commit takes ~0.1 ms there (WAL, ``synchronous = NORMAL``: no fsync), whereas the
        writer thread's two hops cost 0.4–2.5 ms p50 in scenario 4 (the thread waits for
        the GIL, then the result waits for a loop busy building the model request).
        Anything larger, or a lock held elsewhere, goes to the writer thread as before.
        """
        if self.sqlite and _small(batch) and self._sqlite_inline(batch, steps):
            return
        if self.sqlite:
            assert self._executor is not None
            called = time.perf_counter()
            stamps: list[float] = []
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._sqlite_commit, batch, steps, stamps
            )
            if steps is not None and len(stamps) == 2:
                # The two thread hops: into the writer thread, and back into the loop.
                steps.append(("db_thread_in", stamps[0] - called))
                steps.append(("db_thread_out", time.perf_counter() - stamps[1]))
        else:
            async with asyncio.timeout(self.timeout):
                await self._postgres_commit(batch, steps)

    # -- SQLite: one call into the writer thread per batch -------------------------------

    def _sqlite_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.engine.path,
                timeout=self.timeout,
                isolation_level=None,  # BEGIN/COMMIT are ours
                check_same_thread=False,
            )
            conn.execute("PRAGMA foreign_keys = 1")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
        return self._conn

    def _close_sqlite(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_inline(self) -> None:
        if self._inline is not None:
            with contextlib.suppress(sqlite3.Error):
                self._inline.close()
            self._inline = None

    def _sqlite_inline(self, batch: list[_Op], steps: list[tuple[str, float]] | None) -> bool:
        """Write ``batch`` on the loop's thread; ``False`` (nothing written) when the write
        lock is not free at once. Its connection never waits for a lock (busy timeout 0)
        and never checkpoints on commit (a checkpoint syncs the file); the writer thread
        checkpoints instead, every :data:`CHECKPOINT_EVERY` inline commits."""
        if self._inline is None:
            conn = sqlite3.connect(
                self.engine.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA foreign_keys = 1")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._inline = conn
        conn = self._inline
        clock = _Steps(steps)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False  # locked (or the file is gone): the thread waits for it
        except sqlite3.Error:
            self._close_inline()
            return False
        clock.lap("db_begin")
        try:
            _write_and_commit(conn, batch, clock)
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._close_inline()  # never left inside a transaction: a fresh one next
            if isinstance(exc, sqlite3.OperationalError) and is_unavailable(exc):
                return False  # not written: the thread retries it with a busy timeout
            raise
        self._inline_since_checkpoint += 1
        if self._inline_since_checkpoint >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._inline_since_checkpoint = 0
            assert self._executor is not None
            self._checkpoint = asyncio.get_running_loop().run_in_executor(
                self._executor, self._sqlite_checkpoint
            )
            self._checkpoint.add_done_callback(self._checkpointed)
        return True

    def _sqlite_checkpoint(self) -> None:
        self._sqlite_connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpointed(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("sqlite_checkpoint_failed", error=repr(future.exception())[:300])

    def _sqlite_commit(
        self,
        batch: list[_Op],
        steps: list[tuple[str, float]] | None = None,
        stamps: list[float] | None = None,
    ) -> None:
        entered = time.perf_counter()
        clock = _Steps(steps)
        conn = self._sqlite_connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            self._close_sqlite()  # a fresh connection next time, never a leaked one
            raise
        clock.lap("db_begin")
        try:
            _write_and_commit(conn, batch, clock)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if stamps is not None:
            stamps += [entered, time.perf_counter()]

    # -- PostgreSQL: one pooled connection, one transaction -------------------------------

    async def _postgres_commit(
        self, batch: list[_Op], steps: list[tuple[str, float]] | None = None
    ) -> None:
        """One transaction on the writer's own connection.

        The connection is kept between batches: giving it back to the pool costs a round
        trip (asyncpg resets it) before the callers could be answered. A batch of one
        statement is sent alone, its own implicit transaction (committed, durably, before
        PostgreSQL answers): one round trip instead of four (BEGIN, the statements,
        COMMIT), each of which waited for a turn of a loop busy with the model request.
        A turn start is one statement for this: its two rows and the conversation's
        ``updated_at`` in one data-modifying ``WITH``. On any error the connection is
        closed, never reused in an unknown state.
        """
        clock = _Steps(steps)
        conn = await self._postgres_connection()
        clock.lap("db_acquire")
        try:
            single = _one_statement(batch)
            if single is not None:
                kind, sql, args = single
                await conn.execute(sql, *args)
                clock.lap(f"db_{kind}")
                return
            async with conn.transaction():
                clock.lap("db_begin")
                for kind, sql, rows in _statements(batch, "$"):
                    await conn.executemany(sql, rows)
                    clock.lap(f"db_{kind}")
                for op in _interrupts(batch):
                    found = await conn.fetch(_PG_SQL["interrupt"], *op.rows[0])
                    op.returned = [tuple(row) for row in found]
                    clock.lap("db_interrupt")
            clock.lap("db_commit")
        except BaseException:
            await self._drop_postgres()
            raise

    async def _postgres_connection(self) -> Any:
        if self._pg is not None and _closed(self._pg):
            # The server ended it while it sat idle between batches (a restart, a
            # terminated backend): a fresh one, rather than a batch failed on a dead one.
            await self._drop_postgres()
        if self._pg is None:
            assert isinstance(self.engine, PostgresEngine)
            pool = self.engine.pool
            if pool is None:
                raise StoreUnavailable("the PostgreSQL pool is not running")
            self._pg = await pool.acquire()
        return self._pg

    async def _drop_postgres(self) -> None:
        """Close the writer's connection and give its slot back to the pool.

        A connection the server closed is back in the pool already (asyncpg returns its
        slot when the socket closes, and detaches the writer's proxy): terminating it
        through the proxy then raises ``InterfaceError``, which must neither replace the
        batch's own error nor break the shutdown (issue 20)."""
        conn, self._pg = self._pg, None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()  # at once, whatever state it is in
        pool = self.engine.pool
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.release(conn)


#: The process's writer (started and stopped by the chat runtime).
WRITER: web.AppKey[BatchWriter] = web.AppKey("batch_writer")


def _closed(conn: Any) -> bool:
    """A pooled connection the server closed (its proxy detached, or its socket gone)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # released back to the pool when its socket closed
        return True


def _message_row(m: StoredMessage, user_id: str | None, fence: int) -> tuple[Any, ...]:
    return (
        m.id,
        user_id,
        m.conversation_id,
        m.role,
        m.content,
        m.status,
        m.model,
        m.generation_id,
        m.client_message_id,
        m.created_at,
        m.created_at,
        fence,
        m.parent_id,
    )


_SQL = {
    "turn": "INSERT INTO message (id, user_id, conversation_id, role, content, status, model, "
    "generation_id, client_message_id, created_at, updated_at, fence, parent_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "touch": "UPDATE conversation SET updated_at = ?, active_leaf_id = ? WHERE id = ?",
    # A continued answer: streaming again under a new generation (and fence), its text
    # kept; its key (if any) replaces the one it had.
    "resume": "UPDATE message SET status = 'streaming', generation_id = ?, fence = ?, "
    "finish_reason = NULL, client_message_id = COALESCE(?, client_message_id), "
    "user_id = COALESCE(?, user_id), updated_at = ? WHERE id = ?",
    "leaf": "UPDATE conversation SET active_leaf_id = ? WHERE id = ?",
    # Undo of a continue its caller was told failed: the answer stops streaming, text kept.
    "stop": "UPDATE message SET status = 'interrupted', updated_at = ? "
    "WHERE id = ? AND generation_id = ? AND status = 'streaming'",
    # A flush that lands after the terminal state leaves the row alone. Every update is
    # fenced: a writer whose lease was taken over (cluster mode) changes nothing.
    "append": "UPDATE message SET content = substr(content, 1, ?) || ?, updated_at = ? "
    "WHERE id = ? AND fence = ? AND status = 'streaming'",
    "finish": "UPDATE message SET content = ?, status = ?, finish_reason = ?, usage = ?, "
    "citations = ?, tools = ?, updated_at = ? WHERE id = ? AND fence = ?",
    # A lease taken over (cluster mode): the conversation's answers still streaming are
    # the old owner's; they end here, under the new fence. Not fenced itself: it is what
    # moves the fence.
    "interrupt": "UPDATE message SET status = 'interrupted', fence = ?, updated_at = ? "
    "WHERE conversation_id = ? AND status = 'streaming' RETURNING id, generation_id",
}


def _dollar(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


_PG_SQL = {kind: _dollar(sql) for kind, sql in _SQL.items()}


#: SQLite: batches up to this many rows (and :data:`INLINE_MAX_CHARS` of text) are
#: written on the loop's thread when the lock is free (see ``BatchWriter._commit``).
INLINE_MAX_ROWS = 8
INLINE_MAX_CHARS = 64 << 10
#: SQLite: inline commits between two passive checkpoints by the writer thread.
CHECKPOINT_EVERY = 200


def _small(batch: list[_Op]) -> bool:
    rows = 0
    chars = 0
    for op in batch:
        rows += len(op.rows)
        for row in op.rows:
            chars += sum(len(value) for value in row if isinstance(value, str))
    return rows <= INLINE_MAX_ROWS and chars <= INLINE_MAX_CHARS


_ROW_COLUMNS = 13


def _pg_turn(rows: int) -> str:
    """A turn start in one statement: its rows (2, or 1 for a regenerate), and the
    conversation's ``updated_at`` and active leaf."""
    values = ", ".join(
        "(" + ", ".join(f"${r * _ROW_COLUMNS + c + 1}" for c in range(_ROW_COLUMNS)) + ")"
        for r in range(rows)
    )
    n = rows * _ROW_COLUMNS
    # Numbered placeholders only, never a value:
    return (
        "WITH turn AS (INSERT INTO message (id, user_id, conversation_id, role, content, "  # noqa: S608
        "status, model, generation_id, client_message_id, created_at, updated_at, fence, "
        f"parent_id) VALUES {values}) "
        f"UPDATE conversation SET updated_at = ${n + 1}, active_leaf_id = ${n + 2} "
        f"WHERE id = ${n + 3}"
    )


_PG_TURN = {1: _pg_turn(1), 2: _pg_turn(2)}


def _one_statement(batch: list[_Op]) -> tuple[str, str, tuple[Any, ...]] | None:
    """PostgreSQL: the batch as one statement ``(kind, sql, args)``, when it is one turn
    start (its rows and the conversation's touch in one ``WITH``) or one row of one kind."""
    if len(batch) != 1:
        return None
    op = batch[0]
    if op.kind == "turn" and len(op.rows) in _PG_TURN and len(op.touched) == 1:
        args = tuple(value for row in op.rows for value in row) + op.touched[0]
        return "turn_statement", _PG_TURN[len(op.rows)], args
    if op.kind in ("append", "finish", "leaf", "stop") and len(op.rows) == 1:  # not interrupt
        return op.kind, _PG_SQL[op.kind], op.rows[0]
    return None


def _write_and_commit(conn: sqlite3.Connection, batch: list[_Op], clock: _Steps) -> None:
    """SQLite, inside ``BEGIN IMMEDIATE``: one ``executemany`` per statement kind, then
    ``COMMIT``, each timed (``db_<kind>``, ``db_commit``)."""
    for kind, sql, rows in _statements(batch, "?"):
        conn.executemany(sql, rows)
        clock.lap(f"db_{kind}")
    for op in _interrupts(batch):
        op.returned = conn.execute(_SQL["interrupt"], op.rows[0]).fetchall()
        clock.lap("db_interrupt")
    conn.execute("COMMIT")
    clock.lap("db_commit")


class _Steps:
    """Laps of one transaction's steps, kept only when ``steps`` is a list."""

    __slots__ = ("last", "steps")

    def __init__(self, steps: list[tuple[str, float]] | None) -> None:
        self.steps = steps
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.steps is not None:
            now = time.perf_counter()
            self.steps.append((name, now - self.last))
            self.last = now


def _interrupts(batch: list[_Op]) -> list[_Op]:
    """The batch's ``interrupt`` ops: each one statement of its own (it returns the rows
    it marked), after every other statement of the batch."""
    return [op for op in batch if op.kind == "interrupt"]


def _statements(batch: list[_Op], style: str) -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    """The batch as ``(sql, rows)`` pairs, in an order that keeps every op's meaning:
    inserts first, then the flushes (which skip rows no longer streaming), then the
    terminal states (``interrupt`` ops follow them: :func:`_interrupts`)."""
    sql = _SQL if style == "?" else _PG_SQL
    groups = {
        "turn": [row for op in batch if op.kind == "turn" for row in op.rows],
        "resume": [row for op in batch if op.kind == "resume" for row in op.rows],
        "touch": [row for op in batch if op.kind in ("turn", "resume") for row in op.touched],
        "leaf": [row for op in batch if op.kind == "leaf" for row in op.rows],
        "append": [row for op in batch if op.kind == "append" for row in op.rows],
        "finish": [row for op in batch if op.kind == "finish" for row in op.rows],
        "stop": [row for op in batch if op.kind == "stop" for row in op.rows],
    }
    return [(kind, sql[kind], rows) for kind, rows in groups.items() if rows]
