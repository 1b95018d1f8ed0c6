"""Piccolo's SQLite engine with long-lived connections for queries outside a transaction.

Piccolo runs every such query on a new aiosqlite connection: a new thread, ``open()``,
a ``PRAGMA``, the query, a ``COMMIT`` and a close, each a hop between threads. Profiled
under 200 concurrent turns (issue 14, py-spy on the server): 43 % of the event loop's
samples were in ``Query.run``, 22 % of them in ``Thread.start`` alone, which blocks the
loop until the new thread runs. Here each query is one call into a small pool of worker
threads that keep their connection open (WAL: readers do not block each other or the
writer); transactions keep Piccolo's own path.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from piccolo.engine.sqlite import SQLiteEngine, dict_factory

#: Worker threads, each with its own connection.
WORKERS = 4


class PooledSQLiteEngine(SQLiteEngine):
    def __init__(self, path: str, *, workers: int = WORKERS, **connection_kwargs: Any) -> None:
        super().__init__(path=path, **connection_kwargs)
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="sqlite-query")
        return self._executor

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(**self.connection_kwargs, check_same_thread=False)
            conn.row_factory = dict_factory
            conn.execute("PRAGMA foreign_keys = 1")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _run_sync(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        conn = self._connection()
        cursor = conn.execute(query, args)
        try:
            rows: list[dict[str, Any]] = cursor.fetchall()
        finally:
            cursor.close()
        if conn.in_transaction:  # autocommit mode: only a failed statement leaves one open
            conn.rollback()
        return rows

    async def _run_in_new_connection(
        self,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: Any = None,
    ) -> list[dict[str, Any]]:
        # SQLite >= 3.35 answers inserts with RETURNING, so every query type is one call.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._run_sync, query, args or [])

    def close(self) -> None:
        """Stop the workers and close their connections (at shutdown)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
