"""Following a conversation's events over SSE: rendering them, and resuming after a drop.

One loop serves ``cero chat`` (the ``POST /api/chat`` stream, then — after a network drop —
``GET /api/conversations/{id}/events`` from the last cursor) and ``cero watch`` (that
endpoint from the start). A reconnect sends the cursor as ``Last-Event-ID`` and the
server replays what was missed; events already shown (same epoch, ``seq`` not above the
last one) are skipped, so nothing is printed twice. When the server answers ``reset``
(the cursor fell out of its log) the messages are re-read over REST and the answer in
progress is completed from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import orjson
import structlog

from client.api import Api
from client.errors import CliError, Exit
from client.friendly import network_reason
from client.output import Output
from client.sse import ServerSentEvent, SSEParser

log = structlog.get_logger("cero.follow")

TERMINAL = frozenset({"done", "error", "cancelled"})
FIRST_RETRY = 1.0  # seconds, until the stream sets `retry`
MAX_RETRY = 30.0
#: Network failures of this kind are worth a reconnect.
DROPS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,  # connection errors, payload errors (TransferEncodingError), …
    TimeoutError,
    ConnectionError,
)

Opener = Callable[[str | None], AbstractAsyncContextManager[aiohttp.ClientResponse]]


class EventHandler(Protocol):
    """What :func:`follow` drives: a conversation's :class:`Follower`, or the account
    channel's (:mod:`client.account`)."""

    api: Api
    out: Output

    async def handle(self, sse: ServerSentEvent) -> bool: ...

    def gave_up(self, reason: str) -> CliError: ...


def tool_line(tool: str, payload: Any) -> str:
    """A tool step as one stderr line (code and its output keep their lines)."""
    p = payload if isinstance(payload, dict) else {}
    if tool == "google_search":
        return "[search] " + " | ".join(str(q) for q in p.get("queries") or [])
    if tool == "url_context":
        urls = p.get("urls") or []
        return "[read] " + ", ".join(
            f"{u.get('url')} ({u.get('status')})" if isinstance(u, dict) else str(u) for u in urls
        )
    if tool == "code_execution":
        return f"[code {p.get('language', '')}]\n{p.get('code', '')}".rstrip()
    if tool == "code_execution_result":
        return f"[output {p.get('outcome', '')}]\n{p.get('output', '')}".rstrip()
    return f"[{tool}] {orjson.dumps(payload).decode()}"


@dataclass
class Follower:
    """Renders one conversation's events; knows when the command is finished."""

    api: Api
    out: Output
    mode: Literal["chat", "watch"]
    json: bool = False
    once: bool = False  # watch: stop after the first answer ends
    conversation_id: str | None = None
    generation_id: str | None = None  # chat: the generation whose end ends the command
    message_id: str | None = None
    asked_model: str | None = None
    result: CliError | None = None
    #: chat: Ctrl-C asked for the answer to stop; ``stopped``: it was (not an error then).
    cancel_requested: bool = False
    stopped: bool = False
    printed: dict[str, str] = field(default_factory=dict)  # answer id → text shown
    catch_up: set[str] = field(default_factory=set)  # answers completed from REST at their end
    shown_users: set[str] = field(default_factory=set)  # user messages already shown
    epoch: str | None = None
    seq: int = 0
    #: watch: the ``resumeCursor`` of the answer streaming when it started (the event
    #: before that answer's ``init``): the first subscribe replays the answer whole.
    resume: str | None = None
    #: watch: how many earlier messages to print before going live.
    history: int = 0
    viewers: int = 1  # the last ``presence`` count (this watch is one)
    shown_viewers: int = 1  # the count the last presence line showed

    # -- events ----------------------------------------------------------------------------

    async def handle(self, sse: ServerSentEvent) -> bool:
        """Show one event; ``True`` when the command is done."""
        try:
            data = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            log.debug("not_json", event=sse.event)
            return False
        if not isinstance(data, dict):
            return False
        kind = data.get("type") or sse.event
        epoch, seq = data.get("epoch"), data.get("seq")
        if isinstance(epoch, str) and isinstance(seq, int) and kind != "reset":
            if epoch == self.epoch and seq <= self.seq:
                return False  # already shown before a reconnect
            self.epoch, self.seq = epoch, seq
        if self.json:
            self.out.verbatim(sse.data + "\n")
        if kind == "reset":
            if isinstance(epoch, str) and isinstance(seq, int):
                self.epoch, self.seq = epoch, seq
            return await self.resync()
        if self.json:
            return self._ends(kind, data)
        match kind:
            case "message":
                self._message(data)
            case "init":
                self._init(data)
            case "token":
                mid, text = data.get("messageId"), data.get("text")
                if isinstance(mid, str) and isinstance(text, str) and mid not in self.catch_up:
                    self.printed[mid] = self.printed.get(mid, "") + text
                    self.out.text(text)
            case "tool":
                self.out.note(tool_line(str(data.get("tool")), data.get("payload")))
            case "done":
                await self._finish(data, data.get("fullText"))
                self._sources(data.get("citations"))
            case "error":
                await self._finish(data, None)
                if self.mode == "watch":  # chat ends with the error line itself
                    self.out.note(f"[error {data.get('code')}] {data.get('error')}")
            case "cancelled":
                await self._finish(data, None)
                if self.mode == "watch":
                    self.out.note("[cancelled]")
            case "presence":
                self._presence(data.get("viewers"))
        return self._ends(kind, data)

    def _presence(self, viewers: Any) -> None:
        """``(2 watching)``: only when someone besides this watch is there, and only when
        the number shown changes; ``(no one else watching)`` once they are gone. Never
        inside an answer's line: shown when the line ends."""
        if self.mode != "watch" or not isinstance(viewers, int):
            return
        self.viewers = viewers
        if self.out.at_line_start:
            self._show_presence()

    def _show_presence(self) -> None:
        if self.viewers == self.shown_viewers:
            return
        if self.viewers > 1:
            self.out.tty_note(f"({self.viewers} watching)")
        elif self.shown_viewers > 1:
            self.out.tty_note("(no one else watching)")
        self.shown_viewers = self.viewers

    def _message(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if self.mode == "watch" and isinstance(message, dict) and message.get("role") == "user":
            self._show_user(message)

    def _show_user(self, message: dict[str, Any]) -> None:
        mid = message.get("id")
        if mid in self.shown_users:
            return  # shown by join() already
        if isinstance(mid, str):
            self.shown_users.add(mid)
        self.out.end_line()
        content = str(message.get("content", ""))
        self.out.text("".join(f"> {line}\n" for line in content.split("\n")))

    def _init(self, data: dict[str, Any]) -> None:
        mid = data.get("messageId")
        if isinstance(mid, str):
            self.printed.setdefault(mid, "")
        if data.get("generationId") == self.generation_id and isinstance(mid, str):
            self.message_id = mid
        model = data.get("aiModel")
        if self.asked_model and model and model != self.asked_model:
            self.out.note(f"({self.asked_model} is answered by {model})")

    async def _finish(self, data: dict[str, Any], full_text: Any) -> None:
        """An answer ended: show what is missing of it, then end its line."""
        mid = data.get("messageId")
        if not isinstance(mid, str):
            return
        if mid in self.catch_up:
            if not isinstance(full_text, str):
                full_text = (await self._stored(mid) or {}).get("content")
            self._complete(mid, full_text if isinstance(full_text, str) else "")
            self.catch_up.discard(mid)
        if mid in self.printed or self.mode == "chat":
            self.out.end_line()
        self.printed.pop(mid, None)
        if self.mode == "watch":
            self._show_presence()  # a change that came mid-answer

    def _complete(self, mid: str, content: str) -> None:
        shown = self.printed.get(mid, "")
        if content.startswith(shown):
            self.out.text(content[len(shown) :])
        elif content:
            self.out.note("(the answer changed while offline; its full text follows)")
            self.out.end_line()
            self.out.text(content)
        self.printed[mid] = content

    def _sources(self, citations: Any) -> None:
        if not isinstance(citations, list) or not citations:
            return
        self.out.note("Sources:")
        for n, c in enumerate(citations, 1):
            if isinstance(c, dict):
                title = c.get("title") or c.get("uri")
                self.out.note(f"  [{n}] {title} — {c.get('uri')}")

    def _ours(self, data: dict[str, Any]) -> bool:
        gid, mid = data.get("generationId"), data.get("messageId")
        return (gid is not None and gid == self.generation_id) or (
            mid is not None and mid == self.message_id
        )

    def _ends(self, kind: str, data: dict[str, Any]) -> bool:
        if kind not in TERMINAL:
            return False
        if self.mode == "watch":
            return self.once
        if not self._ours(data):
            return False
        if kind == "error":
            code = data.get("code")
            self.result = CliError(
                f"{data.get('error')} ({code})" if code else str(data.get("error"))
            )
        elif kind == "cancelled":
            if self.cancel_requested:
                self.stopped = True
            else:
                self.result = CliError("the answer was cancelled")
        return True

    def gave_up(self, reason: str) -> CliError:
        """The one line for a stream that could not be resumed (no traceback, exit 4)."""
        watch = f"cero watch {self.conversation_id}" if self.conversation_id else "cero watch ID"
        if self.mode == "chat" and self.message_id is not None:
            return CliError(
                f"the server closed the connection mid-answer ({reason}); the answer may "
                f"still be running: {watch}",
                Exit.UNREACHABLE,
            )
        if self.mode == "chat":
            return CliError(
                f"the server closed the connection before the answer started ({reason}); "
                f"see whether it did: {watch}",
                Exit.UNREACHABLE,
            )
        return CliError(
            f"lost the connection to {self.api.server} ({reason}); follow it again: {watch}",
            Exit.UNREACHABLE,
        )

    # -- REST ------------------------------------------------------------------------------

    async def _messages(self) -> list[dict[str, Any]]:
        answer = await self.api.request(
            "GET", f"/api/conversations/{self.conversation_id}/messages"
        )
        messages = answer.get("messages") if isinstance(answer, dict) else None
        return [m for m in messages or [] if isinstance(m, dict)]

    async def _stored(self, mid: str) -> dict[str, Any] | None:
        for m in await self._messages():
            if m.get("id") == mid:
                return m
        return None

    async def joining(self) -> None:
        """``watch``, before it subscribes: an answer streaming now is joined from its
        ``resumeCursor`` (its ``init`` and every token replayed, then live), so it prints
        whole, token by token. Its REST text is not printed: the replay brings it."""
        messages = await self._messages()
        last = messages[-1] if messages else None
        streaming = bool(
            last and last.get("role") == "assistant" and last.get("status") == "streaming"
        )
        if self.history and not self.json:
            # The answer streaming and the message it answers are shown by the replay.
            done = messages[:-1] if streaming else messages
            if streaming and done and done[-1].get("role") == "user":
                done = done[:-1]
            self._show_history(done[-self.history :] if done else [])
        if not (last and streaming):
            return
        cursor = last.get("resumeCursor")
        if not isinstance(cursor, str):
            return  # not replayable: join() completes it from REST after subscribing
        self.resume = cursor
        if self.json:
            return
        self.out.note("(joining an answer in progress)")
        if len(messages) > 1 and messages[-2].get("role") == "user":
            self._show_user(messages[-2])
        # Shown so far: nothing (a `reset` instead of the replay completes it from REST).
        self.printed[str(last.get("id"))] = ""

    def _show_history(self, messages: list[dict[str, Any]]) -> None:
        """The conversation so far (its last messages), as the live part prints them."""
        if not messages:
            return
        self.out.tty_note(f"(the last {len(messages)} messages)")
        for m in messages:
            if m.get("role") == "user":
                self._show_user(m)
                continue
            self.out.text(str(m.get("content", "")))
            self.out.end_line()
            if m.get("status") != "complete":
                self.out.note(f"[{m.get('status')}]")

    async def join(self) -> None:
        """``watch`` just subscribed without a cursor: show the answer streaming now, if
        any, so far (an older server without ``resumeCursor``)."""
        if self.json:
            return
        messages = await self._messages()
        last = messages[-1] if messages else None
        if last and last.get("role") == "assistant" and last.get("status") == "streaming":
            # Its tokens so far are not replayed to a new subscriber: show the stored text,
            # and the rest when it ends (the overlap with live tokens is unknowable).
            mid = str(last.get("id"))
            self.out.note("(joining an answer in progress; the rest shows when it ends)")
            if len(messages) > 1 and messages[-2].get("role") == "user":
                self._show_user(messages[-2])
            self._complete(mid, str(last.get("content", "")))
            self.catch_up.add(mid)

    async def resync(self) -> bool:
        """After ``reset``: complete the answers in progress from REST; ``True`` when the
        one this command waits for has ended meanwhile."""
        self.out.note("(missed events while disconnected; re-reading the conversation)")
        stored = {str(m.get("id")): m for m in await self._messages()}
        wanted = set(self.printed) | ({self.message_id} if self.message_id else set())
        for mid in wanted:
            m = stored.get(mid)
            if m is None:
                continue
            if not self.json:
                self._complete(mid, str(m.get("content", "")))
            if m.get("status") == "streaming":
                self.catch_up.add(mid)
                continue
            self.catch_up.discard(mid)
            self.printed.pop(mid, None)
            if not self.json:
                self.out.end_line()
            if mid == self.message_id and self.mode == "chat":
                status = m.get("status")
                if status == "cancelled" and self.cancel_requested:
                    self.stopped = True
                elif status == "cancelled":
                    self.result = CliError("the answer was cancelled")
                elif status != "complete":
                    self.result = CliError(f"the answer ended with status {status}")
                return True
        return False


async def follow(
    follower: EventHandler,
    first: Opener,
    again: Opener,
    *,
    on_connect: Callable[[aiohttp.ClientResponse, bool], Any] | None = None,
    max_failures: int = 8,
) -> None:
    """Read events until ``follower`` is done, reconnecting after drops.

    ``first(None)`` opens the first stream; ``again(cursor)`` every later one. A first
    attempt that cannot connect fails at once (no server); after that, drops are retried
    with the stream's ``retry`` delay, doubled per consecutive failure, ``max_failures``
    times in a row."""
    parser = SSEParser()
    failures = 0
    connected_once = False
    while True:
        opener = again if connected_once else first
        cursor = parser.last_event_id or None
        try:
            async with opener(cursor) as resp:
                if on_connect is not None:
                    await on_connect(resp, connected_once)
                connected_once = True
                failures = 0
                async for chunk in _chunks(resp):
                    for event in parser.feed(chunk):
                        if await follower.handle(event):
                            return
            reason = "the server ended the stream"
        except BrokenPipeError:
            raise  # our stdout's reader is gone (`| head`): nothing to resume for
        except DROPS as exc:
            if not connected_once:
                raise follower.api.unreachable(exc) from None
            reason = network_reason(exc)
        except CliError as exc:
            if not (connected_once and exc.retryable):
                raise
            reason = exc.message
        failures += 1
        if failures > max_failures:
            raise follower.gave_up(reason)
        base = parser.retry / 1000 if parser.retry is not None else FIRST_RETRY
        delay = min(MAX_RETRY, base * 2 ** (failures - 1))
        follower.out.note(f"(connection lost: {reason}; resuming in {delay:.1f} s)")
        log.debug("reconnect", delay=delay, cursor=parser.last_event_id, failures=failures)
        await asyncio.sleep(delay)


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_any():
        yield chunk
