"""Command forwarding: ``send`` (and its branch actions), ``cancel``, ``switch`` and delete
reach the conversation's owner.

A process that does not own the conversation pushes the command to the owner's command
list (``RPUSH``) and waits for the answer on its own reply list, up to
``forward_timeout``; one task per node pops both lists (``BLPOP``), runs commands on the
local actor and answers the sender's reply list. A forwarded send carries the sender's
generation slot (``CERO_MAX_GENERATIONS_PER_USER``): the owner adopts it, renews it and
gives it back when its generation ends; the sender forgets it once the owner answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from actors.api import (
    ActorStopped,
    ClientMessageTaken,
    ConversationActor,
    ConversationBusy,
    ConversationNotFound,
    Cursor,
    InvalidTarget,
    MessageNotFound,
    ModelSpec,
    NotContinuable,
    Registry,
    Send,
    SendResult,
    Slot,
    StoreUnavailable,
)
from cluster.keys import NodeContext
from cluster.mirror import ClusterEventLog
from cluster.wire import attachment_json, attachments_of, message, message_json, text

log = structlog.get_logger(__name__)

#: The owner's refusals, as they travel in a reply.
_ERRORS: dict[type[Exception], str] = {
    ConversationBusy: "busy",
    ConversationNotFound: "not_found",
    ActorStopped: "stopped",
    ClientMessageTaken: "client_taken",
    MessageNotFound: "message_not_found",
    InvalidTarget: "invalid_target",
    NotContinuable: "not_continuable",
}


class Commands:
    def __init__(
        self,
        ctx: NodeContext,
        *,
        forward_timeout: float,
        resolve_model: Callable[[str], ModelSpec],
        adopt_slot: Callable[[str, str], Slot] | None,
        sync: Callable[[ClusterEventLog], Awaitable[None]],
    ) -> None:
        self.redis, self.keys, self.node_id = ctx.redis, ctx.keys, ctx.node_id
        self._spawn = ctx.spawn
        self.forward_timeout = forward_timeout
        self.resolve_model = resolve_model
        #: (user id, slot id) → the generation slot a forwarded send reserved elsewhere.
        self.adopt_slot = adopt_slot
        self._sync = sync
        self.registry: Registry | None = None
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self.forwarded = 0

    # -- the sender's side --------------------------------------------------------------

    async def forward(self, owner: str, command: dict[str, Any]) -> Any:
        rid = secrets.token_urlsafe(12)
        command["id"] = rid
        command["from"] = self.node_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self.forwarded += 1
        try:
            await self._push(self.keys.commands(owner), command)
            async with asyncio.timeout(self.forward_timeout):
                reply = await future
        except TimeoutError:
            raise StoreUnavailable("the conversation's owner did not answer") from None
        finally:
            self._waiting.pop(rid, None)
        error = reply.get("error")
        if error == "busy":
            raise ConversationBusy(command["conv"])
        if error == "not_found":
            raise ConversationNotFound(command["conv"])
        if error == "stopped":
            raise ActorStopped(command["conv"])
        if error == "client_taken":
            raise ClientMessageTaken(str(command.get("cmid")))
        if error == "message_not_found":
            raise MessageNotFound(str(command.get("target")))
        if error == "invalid_target":
            raise InvalidTarget(str(command.get("target")))
        if error == "not_continuable":
            raise NotContinuable(str(command.get("target")))
        if error is not None:
            raise StoreUnavailable(f"the conversation's owner failed: {error}")
        return reply.get("ok")

    async def _push(self, key: str, payload: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(payload))
            pipe.pexpire(key, int(self.forward_timeout * 1000))
            await pipe.execute()

    async def cancel(self, actor: ConversationActor, owner: str, generation: str | None) -> bool:
        reply = await self.forward(
            owner,
            {
                "kind": "cancel",
                "conv": actor.conversation_id,
                "user": actor.owner_id,
                "gen": generation,
            },
        )
        return bool(reply)

    async def switch(self, actor: ConversationActor, owner: str, message_id: str) -> str:
        reply = await self.forward(
            owner,
            {
                "kind": "switch",
                "conv": actor.conversation_id,
                "user": actor.owner_id,
                "target": message_id,
            },
        )
        return str(reply)

    async def send(
        self, actor: ConversationActor, hub: ClusterEventLog, owner: str, command: Send
    ) -> SendResult:
        # The sender's generation slot goes along: the owner holds it while it generates.
        slot = command.slot
        try:
            reply = await self.forward(
                owner,
                {
                    "kind": "send",
                    "conv": actor.conversation_id,
                    "user": actor.owner_id,
                    "message": command.message,
                    "model": command.model.id,
                    "tools": list(command.tools),
                    "cmid": command.client_message_id,
                    "slot": None if slot is None or not slot.held else slot.token,
                    "action": command.action,
                    "target": command.target,
                    "attachments": [attachment_json(a) for a in command.attachments],
                },
            )
        except StoreUnavailable:
            raise  # no answer: the sender gives the slot back (an owner's renewal re-adds it)
        except BaseException:
            if slot is not None:
                slot.hand_over()  # the owner answered: it gave the slot back already
            raise
        if slot is not None:
            slot.hand_over()
        answer = message(reply["answer"]) if reply.get("answer") else None
        result = SendResult(
            conversation_id=actor.conversation_id,
            generation_id=reply["generationId"],
            user_message=message(reply["user"]),
            assistant_message_id=reply.get("assistantId"),
            model=reply["model"],
            answer=answer,
            retried=bool(reply.get("retried")),
            actor=actor,
            seq_before=reply.get("seqBefore"),
        )
        spec = command.subscribe
        if spec is not None and answer is None:
            seq_before = result.seq_before
            if seq_before is not None and (
                hub.epoch != reply.get("epoch") or hub.last_seq < seq_before
            ):
                await self._sync(hub)
            cursor = None
            if (
                seq_before is not None
                and hub.epoch == reply.get("epoch")
                and hub.last_seq >= seq_before
            ):
                cursor = Cursor(hub.epoch, seq_before)
            result.subscription = actor.subscribe_now(cursor, spec)
        return result

    # -- the owner's side ---------------------------------------------------------------

    async def run(self) -> None:
        keys = [self.keys.commands(self.node_id), self.keys.replies(self.node_id)]
        while True:
            try:
                popped: Any = await self.redis.blpop(keys, timeout=1)
            except RedisError as exc:
                log.warning("command_read_failed", error=repr(exc)[:200])
                await asyncio.sleep(0.5)  # Redis is down: the reconnect's pace
                continue
            if popped is None:
                continue
            key_raw, raw = popped
            payload = orjson.loads(raw)
            if text(key_raw) == keys[1]:
                future = self._waiting.get(payload.get("id", ""))
                if future is not None and not future.done():
                    future.set_result(payload)
            else:
                self._spawn(self._run_command(payload))

    async def _run_command(self, command: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": command.get("id")}
        try:
            reply["ok"] = await self._execute(command)
        except tuple(_ERRORS) as exc:
            reply["error"] = next(code for kind, code in _ERRORS.items() if isinstance(exc, kind))
        except Exception as exc:
            log.warning("forwarded_command_failed", error=repr(exc)[:200])
            reply["error"] = type(exc).__name__
        with contextlib.suppress(RedisError):
            await self._push(self.keys.replies(str(command.get("from"))), reply)

    async def _execute(self, command: dict[str, Any]) -> Any:
        assert self.registry is not None
        cid = str(command["conv"])
        user = str(command.get("user"))
        if command["kind"] == "delete":
            async with self.registry.deleting(cid, here_only=True):
                return True
        if command["kind"] == "cancel":
            actor = await self.registry.get_or_spawn(cid, user)
            return await actor.cancel(command.get("gen"))
        if command["kind"] == "switch":
            actor = await self.registry.get_or_spawn(cid, user)
            return await actor.switch(str(command["target"]))
        token = command.get("slot")
        slot = None
        if token is not None and self.adopt_slot is not None:
            slot = self.adopt_slot(user, str(token))
        try:
            actor = await self.registry.get_or_spawn(cid, user)
            result = await actor.send(
                str(command["message"]),
                model=self.resolve_model(str(command["model"])),
                tools=tuple(command.get("tools") or ()),
                client_message_id=command.get("cmid"),
                slot=slot,
                action=command.get("action") or "send",
                target=command.get("target"),
                attachments=attachments_of(command.get("attachments")),
            )
        finally:
            if slot is not None:
                slot.abandon()  # given back unless the actor (or a further owner) took it
        return {
            "generationId": result.generation_id,
            "user": message_json(result.user_message),
            "assistantId": result.assistant_message_id,
            "model": result.model,
            "answer": None if result.answer is None else message_json(result.answer),
            "retried": result.retried,
            "seqBefore": result.seq_before,
            "epoch": result.actor.epoch if result.actor is not None else None,
        }
