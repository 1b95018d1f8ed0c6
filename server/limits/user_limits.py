"""Per-user limits on chat work: concurrent generations, sends per minute and new
conversations per hour.

Both guard memory and model spend against one account (issue 15, item 12: one user held
500 generations and 2,000 conversations). They are counted in this process's memory:

- **Concurrent generations** are counted exactly: a :class:`GenerationSlot` is taken,
  synchronously, before the send reaches the conversation's actor (so before the turn is
  committed), and given back exactly once when the generation ends however it ends (done,
  error, cancel, shutdown, crash: the actor releases it when its generation task is done),
  or at once when the send started no generation (a retry, a busy conversation, a failed
  commit, an actor that stopped first).
- **Sends per minute** and **new conversations per hour** go through the sliding window of
  :mod:`server.limits.rate_limit`. A send is counted after its generation slot is taken
  (:func:`server.chat.service.start_chat`): a send refused for the generation limit starts
  nothing and costs nothing, so it does not eat into the minute (a client that honours
  that refusal's ``Retry-After: 1`` would otherwise use its budget up by waiting
  politely), and a send refused here gives its slot back on the way out like any send
  that started no generation. A ``clientMessageId`` retry of a started turn is counted by
  neither: it starts nothing.

In cluster mode (``CERO_REDIS_URL``) :class:`server.shared_state.RedisUserLimits` replaces
:class:`UserLimits` (same two ``async`` admission calls, so callers do not change): the
limits then hold across every process. A send forwarded to the conversation's owner carries
its slot's id along; the owner adopts it (:meth:`RedisUserLimits.adopt_generation`), renews
it and gives it back when its generation ends, and the receiving process forgets it
(:meth:`GenerationSlot.hand_over`): the slot counts wherever the generation runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from server.core.errors import ApiError
from server.limits.rate_limit import InFlight, SlidingWindow

#: What a refused send is told to wait: generations end at their own pace, so "soon".
GENERATION_RETRY_AFTER_S = 1
HOUR_S = 3600.0
MINUTE_S = 60.0


class _Releaser(Protocol):
    def _release(self, user_id: str, token: str | None = None) -> None: ...

    def _forget(self, user_id: str, token: str | None = None) -> None: ...


class GenerationSlot:
    """One of a user's concurrent generations, held until :meth:`release`.

    The actor :meth:`adopt`\\ s the slot as it starts handling the send; from then on
    the actor alone gives it back. The caller calls :meth:`abandon` after the send,
    whatever its outcome, which releases the slot only if the actor never took it (the
    command was refused, or never left the mailbox).
    """

    __slots__ = ("_limits", "adopted", "held", "token", "user_id")

    def __init__(self, limits: _Releaser, user_id: str, token: str | None = None) -> None:
        self._limits = limits
        self.user_id = user_id
        self.token = token  # cluster mode: the slot's id in Redis
        self.held = True
        self.adopted = False

    def adopt(self) -> None:
        self.adopted = True

    def release(self) -> None:
        """Give the slot back; any further call is a no-op."""
        if self.held:
            self.held = False
            self._limits._release(self.user_id, self.token)

    def abandon(self) -> None:
        if not self.adopted:
            self.release()

    def hand_over(self) -> None:
        """Cluster mode: the conversation's owner (another process) took the slot over
        with a forwarded send; it renews and gives it back from now on. Forget it here
        without giving it back; any further call is a no-op."""
        if self.held:
            self.held = False
            self.adopted = True
            self._limits._forget(self.user_id, self.token)


class GenerationCounter:
    """Running generations per user, in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = InFlight()

    def reserve(self, user_id: str) -> GenerationSlot | None:
        """A slot, or ``None`` when the user already runs ``limit`` generations."""
        if self._running[user_id] >= self.limit:
            return None
        self._running.add(user_id)
        return GenerationSlot(self, user_id)

    def running(self, user_id: str) -> int:
        return self._running[user_id]

    def _release(self, user_id: str, token: str | None = None) -> None:
        self._running.remove(user_id)

    def _forget(self, user_id: str, token: str | None = None) -> None:
        self._running.remove(user_id)


class UserLimits:
    """The per-user chat limits of one process (memory); see the module docstring."""

    def __init__(
        self,
        *,
        max_generations: int,
        new_conversations_per_hour: int,
        sends_per_minute: int,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.generations = GenerationCounter(max_generations)
        self.new_conversations = SlidingWindow(new_conversations_per_hour, HOUR_S)
        self.sends = SlidingWindow(sends_per_minute, MINUTE_S)
        self._on_refusal = on_refusal  # metrics: 429s by limit

    def _refuse(self, limit: str, message: str, retry_after: int) -> ApiError:
        if self._on_refusal is not None:
            self._on_refusal(limit)
        return rate_limited(message, retry_after)

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        """A generation slot for ``user_id``, or ``429 rate_limited``."""
        slot = self.generations.reserve(user_id)
        if slot is None:
            raise self._refuse_generation()
        return slot

    def _refuse_generation(self) -> ApiError:
        limit = self.generations.limit
        return self._refuse(
            "generations",
            f"At most {limit} answers may be generating at once for one user; "
            "wait for one to finish",
            GENERATION_RETRY_AFTER_S,
        )

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        """A slot reserved by another process for a send forwarded here, counted here
        from now on (cluster mode: :class:`server.shared_state.RedisUserLimits`)."""
        self.generations._running.add(user_id)
        return GenerationSlot(self.generations, user_id, token)

    async def admit_send(self, user_id: str) -> None:
        """Count one send for ``user_id``, or ``429 rate_limited``."""
        wait = self.sends.hit(user_id)
        if wait is not None:
            raise self._refuse_send(wait)

    def _refuse_send(self, wait: int) -> ApiError:
        return self._refuse(
            "sends",
            f"At most {self.sends.limit} messages per minute; wait before sending again",
            wait,
        )

    async def admit_new_conversation(self, user_id: str) -> None:
        """Count one new conversation for ``user_id``, or ``429 rate_limited``."""
        wait = self.new_conversations.hit(user_id)
        if wait is not None:
            limit = self.new_conversations.limit
            raise self._refuse(
                "new_conversations",
                f"At most {limit} new conversations per hour; continue an existing one",
                wait,
            )


def rate_limited(message: str, retry_after: int) -> ApiError:
    """``429 {"error", "code": "rate_limited", "retryAfter"}`` with ``Retry-After`` (the
    body repeats the wait for WebSocket clients, whose ``fault`` has no headers)."""
    return ApiError(
        429,
        "rate_limited",
        message,
        headers={"Retry-After": str(retry_after)},
        extra={"retryAfter": retry_after},
    )
