"""The vocabulary of a conversation actor's mailbox: its commands, what a send carries
(the model, the generation slot, how to subscribe) and its refusals.

Below :mod:`actors.conversation` (which handles the commands), :mod:`actors.generation`
and :mod:`actors.cluster_hooks` (which see them), so none of those imports another for a
type. Imports only :mod:`actors.event_log` and :mod:`actors.generation_timing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from actors.event_log import Event, Subscription
from actors.generation_timing import GenerationTiming
from actors.models.base import Attachment


class ModelSpec(Protocol):
    """What the actor needs to know of a catalog entry."""

    @property
    def id(self) -> str: ...

    @property
    def provider(self) -> str: ...


class Slot(Protocol):
    """A unit of a per-user budget (concurrent generations) that a send holds.

    Taken by the server before the send; the actor adopts it as it handles the send and
    releases it exactly once: at once when the send starts no generation, else when the
    generation's task is done, however it ends.
    """

    #: Cluster mode: the slot's id in the shared store (``None`` in one process).
    token: str | None
    #: ``False`` once released or handed over.
    held: bool

    def adopt(self) -> None: ...

    def release(self) -> None: ...

    def abandon(self) -> None:
        """The sender is done with the send: release the slot unless the actor adopted
        it."""

    def hand_over(self) -> None:
        """Cluster mode: the process that owns the conversation took the slot over with
        a forwarded send; forget it here without giving it back."""


class ConversationBusy(Exception):
    """A generation is already running (``409 conversation_busy``)."""


class ActorStopped(Exception):
    """The actor stopped before it could take the command; the registry respawns it."""


class MessageNotFound(LookupError):
    """A branch operation named a message that is not in the conversation (``404``)."""


class InvalidTarget(ValueError):
    """A branch operation named a message of the wrong kind (``400``, field
    ``messageId``): an edit of an answer, a regenerate of an answer to nothing."""


class NotContinuable(Exception):
    """A continue of a message that is not an answer at a leaf that stopped early
    (``409 not_continuable``)."""


@dataclass(slots=True)
class SubscribeSpec:
    """How a transport wants to receive events (see :meth:`actors.event_log.Hub.subscribe`)."""

    notify: Callable[[], None]
    direct: Callable[[Event], bool] | None = None
    max_events: int | None = None
    max_bytes: int | None = None
    viewer: bool = True  # counts in ``presence``


# -- the commands ------------------------------------------------------------------------


#: What a send does to the conversation's tree (docs/api.md, Branches): ``send`` appends
#: to the active path; ``edit`` adds a sibling of the user message ``target``;
#: ``regenerate`` a new answer to the user message ``target`` (or to the one the answer
#: ``target`` answers); ``continue`` streams on into the answer ``target``.
Action = Literal["send", "edit", "regenerate", "continue"]


@dataclass(slots=True)
class Send:
    message: str
    model: ModelSpec
    tools: tuple[str, ...]
    client_message_id: str | None
    subscribe: SubscribeSpec | None
    slot: Slot | None
    timing: GenerationTiming | None = None
    action: Action = "send"
    target: str | None = None
    #: A new user message's attachments (a ``send`` or an ``edit``).
    attachments: tuple[Attachment, ...] = ()


@dataclass(slots=True)
class Switch:
    """Make the message part of the active path (its newest descendants below it)."""

    message_id: str


@dataclass(slots=True)
class Cancel:
    generation_id: str | None


@dataclass(slots=True)
class Subscribe:
    after: str | None
    spec: SubscribeSpec


@dataclass(slots=True)
class ResumeAt:
    """Where a client that read ``message_id`` (streaming) over REST subscribes from."""

    message_id: str


@dataclass(slots=True)
class Unsubscribe:
    sub: Subscription


@dataclass(slots=True)
class Stop:
    reason: str  # "stopped" | "shutdown" | "deleted"


Command = Send | Cancel | Switch | Subscribe | ResumeAt | Unsubscribe | Stop
