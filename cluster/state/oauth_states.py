"""GitHub sign-in states in Redis: ``SET NX EX`` makes each state single-use across
processes (the state itself travels in the signed cookie, so any process's callback
accepts it)."""

from __future__ import annotations

from cluster.faults import REDIS_FAULTS
from cluster.state.shared import RedisShared
from state.oauth_states import STATE_TTL_S, state_digest


class RedisOAuthStates:
    """:class:`state.oauth_states.OAuthStates` for every process of a cluster."""

    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared

    async def spend(self, state: str) -> bool:
        try:
            won = await self._shared.client.set(
                self._shared.key("oauth-state", state_digest(state)),
                1,
                nx=True,
                ex=STATE_TTL_S,
            )
        except REDIS_FAULTS as exc:
            raise self._shared.fault("oauth_state", exc) from None
        return bool(won)
