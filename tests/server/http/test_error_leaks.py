"""Internal details never reach clients (issue 20, item 8): what failed is said by the
``code`` and one fixed sentence per code (:mod:`actors.error_text`); the exception, with
its addresses and library words, goes to the log only.

- ``/readyz`` with Redis down, and with PostgreSQL cut (a TCP proxy of the test's own,
  :class:`tests.server.storage.test_pg_outage.TcpProxy`), and a send refused while Redis is down: no
  address, port or exception name in the body.
- A model request that cannot connect (Gemini pointed at a closed port): the ``error``
  event and the stored answer carry the fixed sentence, not ``ClientConnectorError``, the
  host or the port; the log has the detail.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import unused_port
from yarl import URL

from actors.error_text import ERROR_TEXT, READY_TEXT
from server.storage.tables import Message
from tests.auth_helpers import make_user_session
from tests.conditions import until
from tests.conftest import create_pg_database, drop_pg_database, live_app
from tests.live_clients import post_chat, read_ndjson
from tests.server.storage.test_pg_outage import TcpProxy
from tests.server_process import serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: What an exception's text would bring along.
LEAKS = ("127.0.0.1", "Error", "Errno", "ssl", "Connect", "Exception", "0x")


def _leak_free(text: str, *extra: str) -> None:
    for word in (*LEAKS, *extra):
        assert word not in text, (word, text)


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url + "/readyz") as resp:
        return resp.status, await resp.text()


async def test_redis_down_readyz_and_sends_name_no_address(postgres_url: str) -> None:
    port = unused_port()  # nothing listens there

    async with (
        live_app(
            postgres_url,
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_prefix=f"cerotest:{secrets.token_hex(6)}:",
        ) as live,
        aiohttp.ClientSession() as http,
    ):
        status, text = await _readyz(http, live.url)
        assert status == 503
        assert text == f'{{"error":"{READY_TEXT["redis"]}","code":"not_ready"}}'
        _leak_free(text, str(port))
        token, _ = await make_user_session("Redis down")
        async with post_chat(http, live.url, token, message="hi", aiModel="demo") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body == {"error": ERROR_TEXT["redis_unavailable"], "code": "not_ready"}


@pytest_asyncio.fixture(loop_scope="module")
async def cut_database() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A new PostgreSQL database reached through a proxy the test can cut."""
    direct = await create_pg_database()
    target = URL(direct)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.restore()
    try:
        yield str(target.with_host("127.0.0.1").with_port(proxy.port)), proxy
    finally:
        await proxy.cut()
        await drop_pg_database(direct)


async def test_database_cut_readyz_names_no_address(
    cut_database: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    """In a ``cero-api serve`` child: the engine's start-up check connects synchronously,
    which the proxy (on this test's loop) could not answer in-process."""
    via_proxy, proxy = cut_database
    async with (
        serve(via_proxy, cwd=tmp_path, env={"CERO_DB_WRITE_TIMEOUT": "1"}) as server,
        aiohttp.ClientSession() as http,
    ):
        await proxy.cut()
        try:
            status, text = await _readyz(http, server.url)
            assert status == 503
            assert text == f'{{"error":"{READY_TEXT["database"]}","code":"not_ready"}}'
            _leak_free(text, str(proxy.port))
        finally:
            await proxy.restore()  # the server closes its pool through it
        # The operator still learns why: the log has the detail.
        await until(lambda: "ConnectionRefusedError" in server.log(), 10)


async def test_model_connect_failure_is_the_fixed_sentence(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = unused_port()  # Gemini "runs" here: nothing listens

    async with (
        live_app(
            database_url,
            gemini_api_key="k",
            gemini_base_url=f"http://127.0.0.1:{port}",
            gemini_retry_backoff=0.01,
        ) as live,
        aiohttp.ClientSession() as http,
    ):
        token, _ = await make_user_session("Gemini down")
        async with post_chat(
            http, live.url, token, message="hello", aiModel="gemini-2.5-flash-lite"
        ) as resp:
            assert resp.status == 200
            lines = await read_ndjson(resp)
        error = lines[-1]
        assert error["topic"] == "error", lines
        assert error["data"] == {
            "error": ERROR_TEXT["upstream_unavailable"],
            "code": "upstream_unavailable",
        }
        message_id = lines[0]["data"]["messageId"]
        row = await Message.select().where(Message.id == message_id).first().run()
        assert row is not None and row["status"] == "error" and row["content"] == ""
    # The operator still learns what happened: the log has the detail.
    logged = capsys.readouterr()
    assert "ClientConnectorError" in logged.out + logged.err
