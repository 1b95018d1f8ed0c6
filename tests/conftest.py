"""Shared fixtures: a fresh database per test module on both engines, and a live server.

The one factory for a running app is :func:`live_app` (settings overrides as keywords;
:func:`live_from` when a setting depends on the port, :func:`live_with_gemini` beside the
Gemini stand-in), over the in-process app of :mod:`standins.live_app` that the benchmarks
share. The module-scoped :func:`live` fixture runs it with the module's
:func:`live_settings`, which a module overrides to change them.

PostgreSQL: a new database is created (and dropped) for each module that asks for it, on
the server named by ``CERO_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Without one the PostgreSQL tests skip
with the reason — except under ``CI=true``, where they fail: CI must never skip them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from server.core.config import Settings
from standins.gemini import FakeGemini, Script
from standins.live_app import Live as Live
from standins.live_app import in_process_settings
from standins.live_app import live_from as live_from
from standins.live_app import start_live as start_live
from tests.process_stats import METRICS_TOKEN

# Tests are hermetic: no setting leaks in from the developer's shell or .env.
_PREFIXES = ("CERO_", "BETTER_AUTH_", "GOOGLE_", "GEMINI_", "DATABASE_URL")
for _name in list(os.environ):
    if _name.startswith(_PREFIXES) and not _name.startswith("CERO_TEST_"):
        del os.environ[_name]

PG_ADMIN_URL = os.environ.get(
    "CERO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Set to a Redis URL to run the live-server tests again in cluster mode (one process with
#: ``CERO_REDIS_URL``, PostgreSQL only; each app under a key prefix of its own).
CLUSTER_REDIS_URL = os.environ.get("CERO_TEST_CLUSTER_REDIS_URL") or None
#: Set to ``sdk`` to run the Gemini tests again with ``CERO_GEMINI_DECODER=sdk`` (the
#: stream read through google-genai's response models); unset: the server's default.
GEMINI_DECODER = os.environ.get("CERO_TEST_GEMINI_DECODER") or None

_pg_problem: str | None = None
_pg_checked = False


async def _check_postgres() -> str | None:
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
            await conn.close()
        except Exception as exc:
            _pg_problem = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc!r}"
    return _pg_problem


async def require_postgres() -> None:
    problem = await _check_postgres()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: PostgreSQL tests must run, not skip)")
        pytest.skip(problem)


def _db_url(admin: str, name: str) -> str:
    base, _, _ = admin.rpartition("/")
    return f"{base}/{name}"


async def create_pg_database() -> str:
    """A brand-new PostgreSQL database; drop it with :func:`drop_pg_database`."""
    await require_postgres()
    name = "cero_test_" + secrets.token_hex(6)
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _db_url(PG_ADMIN_URL, name)


async def drop_pg_database(url: str) -> None:
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def write_lock(
    database_url: str, tables: Sequence[str] = ("message",)
) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection until the block ends, as
    another process (a backup, a migration, a stuck client) would: a plain ``sqlite3``
    connection in ``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL a transaction holding
    ``tables`` ``IN EXCLUSIVE MODE`` (reads pass, writes to them wait)."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(database_url)
    try:
        tx = pg.transaction()
        await tx.start()
        await pg.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await pg.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def postgres_url() -> AsyncIterator[str]:
    """A new PostgreSQL database for this module, dropped afterwards."""
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest_asyncio.fixture(
    loop_scope="module",
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """Each module using it runs once on SQLite and once on a new PostgreSQL database."""
    if request.param == "sqlite" and CLUSTER_REDIS_URL:
        pytest.skip("cluster-mode run (CERO_TEST_CLUSTER_REDIS_URL): PostgreSQL only")
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "cero.db"
        yield f"sqlite:///{path}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """:func:`standins.live_app.in_process_settings` with the tests' defaults, the cluster
    mode of ``CERO_TEST_CLUSTER_REDIS_URL`` and the decoder of ``CERO_TEST_GEMINI_DECODER``;
    ``overrides`` on top."""
    values: dict[str, Any] = {
        "demo_token_delay": 0.002,
        "log_format": "json",
        # A test drives far more sends and sign-ins than a person does, from one user and
        # one address per module; the tests of these limits
        # (tests/server/limits/test_abuse_limits.py)
        # set their own.
        "sends_per_minute": 100_000,
        "sign_in_limit": 100_000,
        # /metrics on the API's listener answers to it (tests/process_stats.py scrapes).
        "metrics_token": METRICS_TOKEN,
        # A generated title is one more model request and one more `conversation.renamed`
        # after each first answer: tests that count those, or read a first message's
        # title, would race it. tests/server/chat/test_titles.py turns it on.
        "generate_titles": False,
    }
    if CLUSTER_REDIS_URL and not database_url.startswith("sqlite"):
        values["redis_url"] = CLUSTER_REDIS_URL
        values["redis_prefix"] = f"cerotest:{secrets.token_hex(6)}:"
    if GEMINI_DECODER:
        values["gemini_decoder"] = GEMINI_DECODER
    values.update(overrides)
    return in_process_settings(database_url, **values)


@asynccontextmanager
async def live_app(database_url: str, **overrides: Any) -> AsyncIterator[Live]:
    """The one way a test runs the app: on a real port, on ``database_url``, with
    ``overrides`` on top of :func:`make_settings`; closed when the block ends (see
    :func:`standins.live_app.live_from`)."""
    async with live_from(
        lambda port: make_settings(database_url, port=port, **overrides)
    ) as running:
        yield running


@asynccontextmanager
async def live_with_gemini(
    database_url: str, *, default_script: Script | None = None, **overrides: Any
) -> AsyncIterator[tuple[Live, FakeGemini]]:
    """:func:`live_app` whose Gemini is the local stand-in
    (:class:`standins.gemini.FakeGemini`, returned beside it): the real google-genai
    SDK talks to it over HTTP. ``overrides`` are settings (fast retries by default)."""
    fake = FakeGemini(default_script=default_script)
    url = await fake.start()
    try:
        settings = {
            "gemini_api_key": "k",
            "gemini_base_url": url,
            "gemini_retry_backoff": 0.01,
            **overrides,
        }
        async with live_app(database_url, **settings) as live:
            yield live, fake
    finally:
        await fake.stop()


@pytest.fixture(scope="module")
def live_settings() -> dict[str, Any]:
    """Setting overrides for this module's :func:`live` app: none here; a module that needs
    some overrides this fixture (``return {"device_poll_interval": 1}``)."""
    return {}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(database_url: str, live_settings: dict[str, Any]) -> AsyncIterator[Live]:
    """The app on a real socket, on this module's database (both engines), with the
    module's :func:`live_settings`."""
    async with live_app(database_url, **live_settings) as running:
        yield running


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly how many PostgreSQL tests ran, so CI output shows they were not skipped."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "postgres" in getattr(report, "keywords", {}):
                counts[outcome] += 1
    terminalreporter.write_line(
        "PostgreSQL tests: {passed} passed, {failed} failed, {skipped} skipped".format(**counts)
    )
