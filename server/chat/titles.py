"""Generated titles (docs/api.md, Conversations): after a conversation's first complete
answer its model writes a short title, which replaces the provisional one (the first
message's words) and reaches every device of the user as ``conversation.renamed``.

The :class:`Titler` listens to the account channel's ``answer.ended`` (registered where
the app starts, ``server/chat/runtime.py``); for each complete answer it tries to claim
the conversation's title (:mod:`server.storage.conversation_titles`: one conditional
``UPDATE``, so only the first answer, on one process, ever asks), asks the model through
its provider's :class:`~actors.models.titles.TitleWriter` within ``CERO_TITLE_TIMEOUT``,
cleans what it wrote (:func:`~actors.models.titles.clean_title`) and stores it unless
the user renamed the conversation meanwhile. A failure of any kind keeps the
provisional title: it is logged, never an error anyone sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from actors.models.catalog import Catalog, UnknownModel
from actors.models.titles import TitleWriter, clean_title
from server.storage.account_channel import AccountChannel
from server.storage.conversation_titles import (
    TitleInputs,
    claim_title,
    conversation_row,
    store_title,
    title_inputs,
)

log = structlog.get_logger(__name__)

#: Titles asked of the models at once; more wait their turn.
MAX_RUNNING = 16
#: Titles waiting or running; beyond it an answer's title is skipped (provisional stays).
MAX_PENDING = 10_000


class Titler:
    """Writes the title of each conversation whose first answer just completed."""

    def __init__(
        self,
        channel: AccountChannel,
        catalog: Catalog,
        writers: Mapping[str, TitleWriter],
        *,
        timeout: float,
    ) -> None:
        self.channel = channel
        self.catalog = catalog
        #: Provider name (``demo``, ``gemini``) → its title writer.
        self.writers = writers
        self.timeout = timeout
        self._gate = asyncio.Semaphore(MAX_RUNNING)
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self.generated = 0
        self.failed = 0

    def start(self) -> None:
        self.channel.answer_listeners.append(self.answer_ended)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.channel.answer_listeners.remove(self.answer_ended)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def answer_ended(
        self, user_id: str, conversation_id: str, message_id: str, status: str
    ) -> None:
        """The account channel's listener: a complete answer may lead to a title."""
        if status != "complete" or conversation_id in self._busy:
            return
        if len(self._tasks) >= MAX_PENDING:
            log.warning("title_skipped", conversation_id=conversation_id, reason="busy")
            return
        self._busy.add(conversation_id)
        task = asyncio.get_running_loop().create_task(
            self._title(user_id, conversation_id, message_id), name="conversation-title"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _title(self, user_id: str, conversation_id: str, message_id: str) -> None:
        try:
            if not await claim_title(conversation_id):
                return  # titled before, renamed, imported, or another process has it
            async with self._gate:
                inputs = await title_inputs(conversation_id, message_id)
                title = None if inputs is None else await self._ask(inputs, conversation_id)
            if title is None:
                self.failed += 1
                return
            row = await store_title(conversation_id, title)
            if row is None:
                log.info("title_not_stored", conversation_id=conversation_id, reason="renamed")
                return
            self.generated += 1
            await self.channel.conversation(user_id, "conversation.renamed", row)
            # A rename stored right after ours may have announced itself before we did:
            # the last event must carry the title as stored.
            now = await conversation_row(conversation_id)
            if now is not None and now["short_title"] != row["short_title"]:
                await self.channel.conversation(user_id, "conversation.renamed", now)
        except Exception as exc:
            self.failed += 1
            log.warning("title_failed", conversation_id=conversation_id, error=repr(exc)[:200])
        finally:
            self._busy.discard(conversation_id)

    async def _ask(self, inputs: TitleInputs, conversation_id: str) -> str | None:
        """The model's title, cleaned; ``None`` when it wrote none we can use."""
        bound = log.bind(conversation_id=conversation_id)
        try:
            model = self.catalog.resolve(inputs.model)
        except UnknownModel:
            bound.info("title_skipped", reason="model no longer offered", model=inputs.model)
            return None
        writer = self.writers.get(model.provider)
        if writer is None:
            bound.info("title_skipped", reason="provider writes no titles", model=model.id)
            return None
        try:
            async with asyncio.timeout(self.timeout):
                raw = await writer.title(model.id, inputs.message, inputs.answer)
        except TimeoutError:
            bound.warning("title_failed", model=model.id, error=f"no title in {self.timeout:g} s")
            return None
        except Exception as exc:
            bound.warning("title_failed", model=model.id, error=repr(exc)[:200])
            return None
        title = clean_title(raw)
        if title is None:
            bound.info("title_skipped", reason="the model's title was empty", model=model.id)
        return title


__all__ = ["Titler"]
