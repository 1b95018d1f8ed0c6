"""The seam between the actors and cluster mode (``cluster/``), as a protocol.

Without ``CERO_REDIS_URL`` nothing implements it and the actors run as in one process.
With it, the registry asks for each new actor's log (:meth:`attach`: the conversation's
shared log, mirrored from Redis), the actor hands every ``send``, ``cancel``, ``switch`` and
``subscribe`` (and resume point) to :meth:`intercept` first (own the conversation, or
forward to its owner; catch the mirror up before a subscribe or a resume point), and
:meth:`exited` hears when an actor stops (its lease is given back).

Generic in the actor it is handed (``ClusterHooks[ConversationActor]`` in
:class:`actors.conversation.ActorDeps`), so this module needs only the mailbox's
vocabulary and imports nothing that imports it back.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from actors.dormant import Dormant
from actors.mailbox import Cancel, ResumeAt, Send, Subscribe, Switch

#: The actor the hooks are handed (contravariant: the hooks take it).
A = TypeVar("A", contravariant=True)


class ClusterHooks(Protocol[A]):
    async def attach(self, conversation_id: str) -> Dormant:
        """The log record a new actor of this conversation adopts."""
        ...

    async def intercept(
        self, actor: A, command: Send | Cancel | Switch | Subscribe | ResumeAt
    ) -> tuple[bool, object]:
        """``(True, result)`` when the command was answered here (forwarded to the owner);
        ``(False, None)`` when the actor handles it itself (a subscribe or a resume point
        after catching the mirror up with the shared log)."""
        ...

    def exited(self, actor: A) -> None:
        """The actor's loop ended (idle, stop, delete, crash)."""
        ...

    async def deleting(self, conversation_id: str) -> None:
        """Before a delete: the owner (on another process) stops the conversation's actor."""
        ...

    async def deleted(self, conversation_id: str) -> None:
        """After a delete: every process closes its copy of the log."""
        ...
