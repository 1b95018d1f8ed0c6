"""Per-user limits on chat work: concurrent generations, sends per minute and new
conversations per hour.

They guard memory and model spend against one account (issue 15, item 12: one user held
500 generations and 2,000 conversations):

- **Concurrent generations** are counted exactly: a :class:`GenerationSlot` is taken before
  the send reaches the conversation's actor (so before the turn is committed), and given
  back exactly once when the generation ends however it ends (done, error, cancel,
  shutdown, crash: the actor releases it when its generation task is done), or at once when
  the send started no generation (a retry, a busy conversation, a failed commit, an actor
  that stopped first).
- **Sends per minute** and **new conversations per hour** are moving windows. A send is
  counted after its generation slot is taken (:func:`server.chat.service.start_chat`): a
  send refused for the generation limit starts nothing and costs nothing, so it does not
  eat into the minute, and a send refused here gives its slot back on the way out like any
  send that started no generation. A ``clientMessageId`` retry of a started turn is counted
  by neither: it starts nothing.

:class:`MemoryUserLimits` counts in this process; in cluster mode
:class:`cluster.state.user_limits.RedisUserLimits` counts across every process. A send
forwarded to the conversation's owner carries its slot's id along; the owner adopts it
(:meth:`UserLimits.adopt_generation`), renews it and gives it back when its generation ends,
and the receiving process forgets it (:meth:`GenerationSlot.hand_over`): the slot counts
wherever the generation runs. Refusals raise :class:`state.errors.Refused`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from state.counting import InFlight, SlidingWindow
from state.errors import Refused

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
        return self.adopt(user_id)

    def adopt(self, user_id: str, token: str | None = None) -> GenerationSlot:
        """A slot counted here whatever the limit (one reserved elsewhere)."""
        self._running.add(user_id)
        return GenerationSlot(self, user_id, token)

    def running(self, user_id: str) -> int:
        return self._running[user_id]

    def _release(self, user_id: str, token: str | None = None) -> None:
        self._running.remove(user_id)

    def _forget(self, user_id: str, token: str | None = None) -> None:
        self._running.remove(user_id)


class UserLimits(Protocol):
    """The per-user chat limits as the chat use-cases use them."""

    @property
    def generations(self) -> GenerationCounter:
        """The generation limit and the generations running *in this process*."""
        ...

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        """A generation slot for ``user_id``, or :class:`Refused`."""
        ...

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        """A slot reserved by another process for a send forwarded here, counted here
        from now on."""
        ...

    async def admit_send(self, user_id: str) -> None:
        """Count one send for ``user_id``, or :class:`Refused`."""
        ...

    async def admit_new_conversation(self, user_id: str) -> None:
        """Count one new conversation for ``user_id``, or :class:`Refused`."""
        ...

    async def close(self) -> None:
        """Wait for what is being given back in the background (slots released)."""
        ...


class UserLimitRefusals:
    """The refusals both implementations give, in the same words."""

    def __init__(self, on_refusal: Callable[[str], None] | None = None) -> None:
        self._on_refusal = on_refusal  # metrics: refusals by limit

    def _refuse(self, limit: str, message: str, retry_after: int) -> Refused:
        if self._on_refusal is not None:
            self._on_refusal(limit)
        return Refused(limit, message, retry_after)

    def _refuse_generation(self, limit: int) -> Refused:
        return self._refuse(
            "generations",
            f"At most {limit} answers may be generating at once for one user; "
            "wait for one to finish",
            GENERATION_RETRY_AFTER_S,
        )

    def _refuse_send(self, limit: int, wait: int) -> Refused:
        return self._refuse(
            "sends", f"At most {limit} messages per minute; wait before sending again", wait
        )

    def _refuse_new_conversation(self, limit: int, wait: int) -> Refused:
        return self._refuse(
            "new_conversations",
            f"At most {limit} new conversations per hour; continue an existing one",
            wait,
        )


class MemoryUserLimits(UserLimitRefusals):
    """:class:`UserLimits` in this process's memory."""

    def __init__(
        self,
        *,
        max_generations: int,
        new_conversations_per_hour: int,
        sends_per_minute: int,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_refusal)
        self._generations = GenerationCounter(max_generations)
        self.new_conversations = SlidingWindow(new_conversations_per_hour, HOUR_S)
        self.sends = SlidingWindow(sends_per_minute, MINUTE_S)

    @property
    def generations(self) -> GenerationCounter:
        return self._generations

    async def reserve_generation(self, user_id: str) -> GenerationSlot:
        slot = self._generations.reserve(user_id)
        if slot is None:
            raise self._refuse_generation(self._generations.limit)
        return slot

    def adopt_generation(self, user_id: str, token: str | None) -> GenerationSlot:
        return self._generations.adopt(user_id, token)

    async def admit_send(self, user_id: str) -> None:
        wait = self.sends.hit(user_id)
        if wait is not None:
            raise self._refuse_send(self.sends.limit, wait)

    async def admit_new_conversation(self, user_id: str) -> None:
        wait = self.new_conversations.hit(user_id)
        if wait is not None:
            raise self._refuse_new_conversation(self.new_conversations.limit, wait)

    async def close(self) -> None:
        """Nothing is given back in the background here."""
