"""The process's Redis health (:class:`cluster.state.connection.RedisHealth`): a request
that finds Redis marked down confirms it with one shared ping before it is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.state.connection import RECHECK_EVERY_S, RedisHealth, connect
from tests.cluster_harness import REDIS_URL, PrivateRedis, require_redis


async def test_a_redis_that_answers_again_is_up_at_the_first_request() -> None:
    """Marked down by a failed command while Redis answers (it came back): the first
    request's confirmation finds it up, without waiting for the monitor."""
    await require_redis(REDIS_URL)
    client = connect(REDIS_URL)
    try:
        health = RedisHealth(client)
        health.failed("xadd", RedisConnectionError("Connection reset by peer"))
        assert not health.up
        assert await health.confirm_down() is False
        assert health.up and health.became_up.is_set()
    finally:
        await client.aclose()


async def test_a_redis_that_stays_down_is_pinged_once_for_many_requests() -> None:
    """Redis not there: every request is refused, and a burst of them shares one ping."""
    client = connect("redis://127.0.0.1:1/0")
    pings = 0
    real_ping = client.ping

    async def counted_ping() -> object:
        nonlocal pings
        pings += 1
        return await real_ping()

    client.ping = counted_ping  # type: ignore[method-assign,assignment]
    try:
        health = RedisHealth(client)
        health.failed("xadd", RedisConnectionError("Connection refused"))
        results = await asyncio.gather(*(health.confirm_down() for _ in range(50)))
        assert results == [True] * 50
        assert pings == 1
        assert await health.confirm_down() is True  # within RECHECK_EVERY_S: no new ping
        assert pings == 1
        await asyncio.sleep(RECHECK_EVERY_S)
        assert await health.confirm_down() is True
        assert pings == 2
        assert not health.up
    finally:
        await client.aclose()


async def test_pooled_connections_outlive_a_redis_restart(tmp_path: Path) -> None:
    """A private Redis restarts (empty): every connection the pool held is dead, and the
    next command on each still succeeds (sent again once on a new connection)."""
    private = PrivateRedis(tmp_path)
    await private.start()
    client = connect(private.url, 4)
    try:
        # Four connections in the pool, all opened before the restart.
        await asyncio.gather(*(client.blpop([f"k{i}"], timeout=0.05) for i in range(4)))
        await private.kill()
        await private.start()
        for i in range(8):
            assert await client.set(f"after{i}", "1")
        assert await client.dbsize() == 8
    finally:
        await client.aclose()
        await private.kill()
