"""The actors' seam: everything code outside ``actors/`` may use of them, in one place.

The rule (checked by the import-linter contract "server and cluster mode use the actors
through actors.api" in pyproject.toml): ``server/`` and ``cluster/`` import from
``actors`` only this module and three leaves that are not the actor: :mod:`actors.clock`
(time helpers), :mod:`actors.error_text` (the wire's error texts) and the
:mod:`actors.models` package (the model providers and the catalog, a seam of their own).
Every other module of ``actors/`` is internal and may change shape without notice; what
outside code needs of it is re-exported here, or added here first.

What is here, by kind:

- the actor and its supervisor: :class:`ConversationActor`, :class:`Registry`, the
  dependencies they are built with (:class:`ActorDeps`, :class:`Flusher`,
  :func:`build_request`);
- the mailbox (:mod:`actors.mailbox`): the commands, what a send carries
  (:class:`ModelSpec`, :class:`Slot`, :class:`SubscribeSpec`), its result
  (:class:`SendResult`);
- the refusals: :class:`ConversationBusy`, :class:`ActorStopped`,
  :class:`ConversationNotFound`, :class:`StoreUnavailable`, :class:`ClientMessageTaken`,
  and the branch operations' :class:`MessageNotFound`, :class:`InvalidTarget`,
  :class:`NotContinuable`;
- the conversation's tree (:mod:`actors.tree`): :class:`ConversationTree`;
- the log (:mod:`actors.event_log`): :class:`EventLog`, :class:`Subscription`, :class:`Event`,
  :class:`Cursor`, :data:`TERMINAL` (the one definition server-side code uses),
  :data:`RESERVED`;
- persistence (:mod:`actors.store`): the :class:`ConversationStore` protocol (every
  method production calls) and its values;
- cluster mode's hooks: :class:`ClusterHooks`, :class:`Dormant`, :class:`StopReason`;
- the turn's clock: :class:`GenerationTiming`, :data:`Observe`, :data:`PHASES`.
"""

from __future__ import annotations

from actors.account_feed import ACCOUNT_EVENTS, CHANNEL, AccountFeeds, AnswerEvents
from actors.cluster_hooks import ClusterHooks
from actors.context import build_request
from actors.conversation import ActorDeps, ConversationActor, SendResult
from actors.dormant import Dormant
from actors.event_log import RESERVED, TERMINAL, Cursor, Event, EventLog, Subscription
from actors.flusher import Flusher
from actors.generation import RequestBuilder, StopReason
from actors.generation_timing import PHASES, GenerationTiming, Observe
from actors.mailbox import (
    Action,
    ActorStopped,
    Cancel,
    Command,
    ConversationBusy,
    InvalidTarget,
    MessageNotFound,
    ModelSpec,
    NotContinuable,
    ResumeAt,
    Send,
    Slot,
    Stop,
    Subscribe,
    SubscribeSpec,
    Switch,
    Unsubscribe,
)
from actors.models.base import Attachment
from actors.registry import ConversationNotFound, Registry
from actors.store import (
    ClientMessageTaken,
    ContinuedGeneration,
    ConversationStore,
    Instructions,
    MessageStatus,
    NewGeneration,
    Outcome,
    StoredMessage,
    StoreUnavailable,
)
from actors.telemetry import GenerationTelemetry
from actors.tree import ConversationTree

__all__ = [
    "ACCOUNT_EVENTS",
    "CHANNEL",
    "PHASES",
    "RESERVED",
    "TERMINAL",
    "AccountFeeds",
    "Action",
    "ActorDeps",
    "ActorStopped",
    "AnswerEvents",
    "Attachment",
    "Cancel",
    "ClientMessageTaken",
    "ClusterHooks",
    "Command",
    "ContinuedGeneration",
    "ConversationActor",
    "ConversationBusy",
    "ConversationNotFound",
    "ConversationStore",
    "ConversationTree",
    "Cursor",
    "Dormant",
    "Event",
    "EventLog",
    "Flusher",
    "GenerationTelemetry",
    "GenerationTiming",
    "Instructions",
    "InvalidTarget",
    "MessageNotFound",
    "MessageStatus",
    "ModelSpec",
    "NewGeneration",
    "NotContinuable",
    "Observe",
    "Outcome",
    "Registry",
    "RequestBuilder",
    "ResumeAt",
    "Send",
    "SendResult",
    "Slot",
    "Stop",
    "StopReason",
    "StoreUnavailable",
    "StoredMessage",
    "Subscribe",
    "SubscribeSpec",
    "Subscription",
    "Switch",
    "Unsubscribe",
    "build_request",
]
