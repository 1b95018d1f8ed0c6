"""Foundation: health endpoints, the error middleware, request ids and migrations."""

from __future__ import annotations

import aiohttp
import pytest
from piccolo.apps.migrations.tables import Migration

from server.storage import db
from server.storage.db import ENGINE
from server.storage.tables import TABLES
from tests.conftest import Live, live_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_root_and_health(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", "/readyz"):
            async with http.get(live.url + path) as resp:
                assert resp.status == 200, path
                body = await resp.json()
                assert body["status"] == "ok"


async def test_request_id_is_echoed_or_made(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/", headers={"X-Request-ID": "abc-123"}) as resp:
            assert resp.headers["X-Request-ID"] == "abc-123"
        async with http.get(live.url + "/", headers={"X-Request-ID": "bad id\u00e9"}) as resp:
            assert resp.headers["X-Request-ID"] not in ("", "bad id\u00e9")
        async with http.get(live.url + "/nope") as resp:
            assert resp.headers.get("X-Request-ID")


async def test_unknown_route_is_json_404(live: Live) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(live.url + "/no/such/thing") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/json"
            assert await resp.json() == {"error": "Not Found", "code": "not_found"}
        async with http.get(live.url + "/api/auth/nothing-here") as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error"] == "not_found" and "error_description" in body


async def test_wrong_method_is_json_405(live: Live) -> None:
    async with aiohttp.ClientSession() as http, http.delete(live.url + "/healthz") as resp:
        assert resp.status == 405
        assert (await resp.json())["code"] == "method_not_allowed"
        assert "GET" in resp.headers.get("Allow", "")


async def test_oversized_body_is_json_413(live: Live) -> None:
    big = b"x" * (live.settings.max_body + 1)
    async with aiohttp.ClientSession() as http:
        async with http.post(live.url + "/healthz", data=big) as resp:
            assert resp.status == 413
            assert (await resp.json())["code"] == "payload_too_large"


async def test_migrations_applied_from_empty(live: Live) -> None:
    applied = await Migration.select(Migration.name).run()
    assert len(applied) >= 2
    for table in TABLES:
        assert await table.table_exists().run(), table._meta.tablename
    # Applying again is a no-op.
    assert await db.migrate(live.app[ENGINE]) == []


async def _redis_up() -> bool:
    import redis.asyncio as redis

    client = redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def test_readyz_checks_redis_when_configured(database_url: str) -> None:
    from server.core.config import ConfigError
    from tests.conftest import IN_CI, make_settings

    if not await _redis_up():
        if IN_CI:
            pytest.fail("Redis not reachable at 127.0.0.1:6379 (CI=true: must not skip)")
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    if database_url.startswith("sqlite"):
        # Cluster mode shares rows between processes: SQLite is refused at start-up.
        with pytest.raises(ConfigError, match=r"CERO_REDIS_URL.*DATABASE_URL"):
            make_settings(database_url, port=0, redis_url="redis://127.0.0.1:6379/0")
        return
    for url, status in (("redis://127.0.0.1:6379/0", 200), ("redis://127.0.0.1:1/0", 503)):
        async with live_app(database_url, redis_url=url) as other, aiohttp.ClientSession() as http:
            async with http.get(other.url + "/readyz") as resp:
                assert resp.status == status, await resp.text()
                body = await resp.json()
        if status == 503:
            assert body["code"] == "not_ready" and "redis" in body["error"]
