"""The per-user chat limits as the chat use-cases and handlers use them (``app[USER_LIMITS]``):
a :class:`state.user_limits.UserLimits` (``MemoryUserLimits`` in one process,
:class:`cluster.state.user_limits.RedisUserLimits` in cluster mode, installed by
:mod:`server.cluster_mode.shared_state`) whose refusals are ``ApiError``\\ s (``429
rate_limited``, ``503 not_ready``).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from server.limits.refusals import as_api_errors
from state.user_limits import GenerationCounter, GenerationSlot, MemoryUserLimits, UserLimits

USER_LIMITS: web.AppKey[UserLimitsApi] = web.AppKey("user_limits")


class UserLimitsApi:
    """A :class:`UserLimits` whose refusals are ``ApiError``\\ s (see the module docstring);
    :attr:`limits` is the implementation."""

    def __init__(self, limits: UserLimits) -> None:
        self.limits = limits

    @property
    def generations(self) -> GenerationCounter:
        return self.limits.generations

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        """A generation slot for ``user_id``, or ``429 rate_limited`` / ``503 not_ready``."""
        with as_api_errors():
            return await self.limits.reserve_generation(user_id)

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        return self.limits.adopt_generation(user_id, token)

    async def admit_send(self, user_id: str) -> None:
        """Count one send for ``user_id``, or ``429 rate_limited`` / ``503 not_ready``."""
        with as_api_errors():
            await self.limits.admit_send(user_id)

    async def admit_new_conversation(self, user_id: str) -> None:
        """Count one new conversation, or ``429 rate_limited`` / ``503 not_ready``."""
        with as_api_errors():
            await self.limits.admit_new_conversation(user_id)


def memory_user_limits(
    *,
    max_generations: int,
    new_conversations_per_hour: int,
    sends_per_minute: int,
    on_refusal: Callable[[str], None] | None = None,
) -> UserLimitsApi:
    """One process's limits (:class:`MemoryUserLimits`)."""
    return UserLimitsApi(
        MemoryUserLimits(
            max_generations=max_generations,
            new_conversations_per_hour=new_conversations_per_hour,
            sends_per_minute=sends_per_minute,
            on_refusal=on_refusal,
        )
    )
