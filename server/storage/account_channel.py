"""The account channel of this process (docs/api.md, Account channel): what changed in a
user's account, told to every device of the user.

Routes publish what they changed (:meth:`AccountChannel.publish`, awaited: the event is in
the log before the response goes out); actors report each answer's start and end
(:class:`actors.api.AnswerEvents`), which one task here completes with the conversation's
row (title, times) and publishes in the order reported, then tells the
:attr:`AccountChannel.answer_listeners` of each answer's end (the chat's titles,
``server/chat/titles.py``, registered where the app starts). The logs themselves are the
actors' :class:`~actors.api.AccountFeeds` (one process) or cluster mode's
:class:`cluster.account_feed.ClusterAccountFeeds` (Redis), chosen where the app starts.

It lives in ``storage`` because it reads the conversation rows, and every package that
publishes (``auth`` for a revoked session, ``chat`` for a created conversation,
``routes``) sits above it. Publishing never fails its caller: a channel that cannot take
an event logs it and the device refetches on its next ``reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from actors.api import AccountFeeds, EventLog, SubscribeSpec, Subscription
from actors.clock import iso
from server.storage.tables import Conversation

log = structlog.get_logger(__name__)

#: Answer events reported by actors and not yet published (beyond it they are dropped).
MAX_PENDING = 100_000

#: Told of each ``answer.ended`` once it is published: ``(user_id, conversation_id,
#: message_id, status)``. Must not block (the chat's titles start a task).
AnswerListener = Callable[[str, str, str, str], None]


def conversation_summary(row: dict[str, Any]) -> dict[str, object]:
    """A conversation as the listing shows it: ``{id, shortTitle, createdAt, updatedAt}``."""
    return {
        "id": str(row["id"]),
        "shortTitle": row["short_title"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


class AccountChannel:
    """Publishes to and subscribes on the users' account logs of this process."""

    def __init__(self, feeds: AccountFeeds) -> None:
        self.feeds = feeds
        self._pending: asyncio.Queue[tuple[str, str, str, dict[str, object]]] = asyncio.Queue(
            MAX_PENDING
        )
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0
        #: Registered where the app starts (``storage`` knows nothing above it): after the
        #: answer's end is published, so that a title it leads to comes after it.
        self.answer_listeners: list[AnswerListener] = []

    def start(self) -> None:
        self.feeds.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="account-channel")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.feeds.close()

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, user_id: str, type: str, fields: dict[str, object]) -> None:
        try:
            await self.feeds.publish(user_id, type, fields)
            self.published += 1
        except Exception as exc:  # the change itself is done; devices resync on `reset`
            self.dropped += 1
            log.warning("account_event_dropped", type=type, user_id=user_id, error=repr(exc)[:200])

    async def conversation(self, user_id: str, type: str, row: dict[str, Any]) -> None:
        """``conversation.created`` or ``conversation.renamed`` with the row's summary."""
        await self.publish(
            user_id,
            type,
            {"conversationId": str(row["id"]), "conversation": conversation_summary(row)},
        )

    async def deleted(self, user_id: str, conversation_id: str) -> None:
        await self.publish(user_id, "conversation.deleted", {"conversationId": conversation_id})

    async def session_revoked(self, user_id: str, session_id: str) -> None:
        await self.publish(user_id, "session.revoked", {"sessionId": session_id})

    # -- actors' answers (AnswerEvents) --------------------------------------------------

    def answer_started(
        self, user_id: str, conversation_id: str, message_id: str, generation_id: str
    ) -> None:
        self._report(
            user_id,
            "answer.started",
            conversation_id,
            {"messageId": message_id, "generationId": generation_id},
        )

    def answer_ended(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        generation_id: str,
        status: str,
    ) -> None:
        self._report(
            user_id,
            "answer.ended",
            conversation_id,
            {"messageId": message_id, "generationId": generation_id, "status": status},
        )

    def _report(
        self, user_id: str, type: str, conversation_id: str, fields: dict[str, object]
    ) -> None:
        if not self.feeds.wanted(user_id) and (type != "answer.ended" or not self.answer_listeners):
            return  # no log to publish to, no listener to tell
        try:
            self._pending.put_nowait((user_id, type, conversation_id, fields))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            user_id, type, conversation_id, fields = await self._pending.get()
            if self.feeds.wanted(user_id):
                await self._publish_answer(user_id, type, conversation_id, fields)
            if type == "answer.ended":
                self._answer_ended(user_id, conversation_id, fields)

    async def _publish_answer(
        self, user_id: str, type: str, conversation_id: str, fields: dict[str, object]
    ) -> None:
        """``answer.*`` with the conversation's row as stored now."""
        try:
            row = await (
                Conversation.select(
                    Conversation.id,
                    Conversation.short_title,
                    Conversation.created_at,
                    Conversation.updated_at,
                )
                .where(Conversation.id == conversation_id)
                .first()
                .run()
            )
        except Exception as exc:
            self.dropped += 1
            log.warning("account_event_dropped", type=type, error=repr(exc)[:200])
            return
        if row is None:  # deleted meanwhile: `conversation.deleted` says so
            return
        await self.publish(
            user_id,
            type,
            {
                "conversationId": conversation_id,
                "conversation": conversation_summary(row),
                **fields,
            },
        )

    def _answer_ended(self, user_id: str, conversation_id: str, fields: dict[str, object]) -> None:
        for listener in self.answer_listeners:
            try:
                listener(user_id, conversation_id, str(fields["messageId"]), str(fields["status"]))
            except Exception as exc:  # a listener's bug never stops the channel
                log.warning("answer_listener_failed", error=repr(exc)[:200])

    # -- reading -------------------------------------------------------------------------

    async def subscribe(
        self, user_id: str, after: str | None, spec: SubscribeSpec
    ) -> tuple[EventLog, Subscription]:
        return await self.feeds.subscribe(user_id, after, spec)

    def unsubscribe(self, log: EventLog, sub: Subscription) -> None:
        self.feeds.unsubscribe(log, sub)


ACCOUNT = web.AppKey("account_channel", AccountChannel)
