"""The Redis half of every interface when Redis does not answer: what admits work refuses
(:class:`state.errors.Unavailable`, the server's ``503 not_ready``), what only relaxes a
check says "cannot tell" (revoked: the caller asks the database), and what gives something
back does not raise. Each fault is reported to the health (``up`` goes false)."""

from __future__ import annotations

import pytest

from cluster.state.oauth_states import RedisOAuthStates
from cluster.state.revocations import RedisRevocations
from cluster.state.stream_limits import RedisStreamLimits
from cluster.state.user_limits import RedisUserLimits
from cluster.state.window import RedisWindow, window_limiter
from cluster.state.wrong_codes import RedisWrongCodes
from state.errors import Unavailable
from tests.state.backends import dead_redis


async def test_admissions_refuse_when_redis_does_not_answer() -> None:
    async with dead_redis() as shared:
        window = RedisWindow(
            window_limiter(shared.client, shared.prefix), shared.health, "w", 1, 60.0
        )
        users = RedisUserLimits(shared, max_generations=1, new_conversations=window, sends=window)
        attempts = {
            "oauth_state": RedisOAuthStates(shared).spend("s"),
            "wrong_codes": RedisWrongCodes(shared).acquire("ip"),
            "w": window.hit("k"),
            "generations": users.reserve_generation("u"),
            "streams": RedisStreamLimits(shared, per_user=1, per_ip=1).open("u", "ip"),
        }
        for op, attempt in attempts.items():
            with pytest.raises(Unavailable) as refused:
                await attempt
            assert refused.value.op == op
        assert not shared.health.up


async def test_what_relaxes_a_check_or_gives_back_does_not_raise() -> None:
    async with dead_redis() as shared:
        revocations = RedisRevocations(shared)
        await revocations.publish("s")  # kept to publish again when Redis returns
        assert await revocations.revoked("s") is True  # cannot tell: ask the database
        assert await revocations.revoked("never revoked") is True
        await RedisWrongCodes(shared).finish("ip", wrong=True)
        assert not shared.health.up
