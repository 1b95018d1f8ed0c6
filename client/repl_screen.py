"""What the interactive mode shows of the live events it receives (:mod:`client.repl`).

One stream of events reaches the session: its own turns, turns sent from another device or
the web page, presence, and the account channel. :class:`Screen` renders them the way
``cero chat`` and ``cero watch`` do — answers on stdout token by token, another device's
message as ``> …`` lines, tool steps and sources on stderr — and tracks the session's own
turn (:class:`Turn`): which generation it is (its ``init`` names the user message sent
with our ``clientMessageId``) and how it ended.

Presence is one stderr line on a terminal, only when another device watches and only when
that changes (``(another device is watching)``, ``(no other device is watching)``). A
rename of the conversation is a note; its deletion elsewhere ends it here (the next line
opens a new one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from client.errors import CliError
from client.follow import tool_line
from client.output import Output
from client.sdk.wire import ACCOUNT

TERMINAL = frozenset({"done", "error", "cancelled"})


@dataclass
class Turn:
    """One line sent by this session, until its answer ends."""

    client_message_id: str
    asked_model: str | None = None
    conversation_id: str | None = None
    user_message_id: str | None = None
    generation_id: str | None = None
    message_id: str | None = None
    cancel_requested: bool = False
    #: Cancelled because Ctrl-C asked (not an error then).
    stopped: bool = False
    #: The answer's failure, as the line to print.
    result: CliError | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once ``generation_id`` is known (a Ctrl-C before then cancels after it).
    identified: asyncio.Event = field(default_factory=asyncio.Event)

    def identify(self, generation_id: str) -> None:
        if self.generation_id is None:
            self.generation_id = generation_id
        self.identified.set()


class Screen:
    """Renders the events of the session's conversation and of the account."""

    def __init__(
        self,
        out: Output,
        *,
        json: bool,
        conversation: str | None,
        posts_are_viewers: bool = False,
        reread: Callable[[str], Awaitable[list[dict[str, Any]]]],
        idle: Callable[[], None],
        lost: Callable[[str, str | None], None],
    ) -> None:
        self.out = out
        self.json = json
        #: The conversation the next line goes to (``None``: the next line opens one).
        self.conversation = conversation
        self.turn: Turn | None = None
        #: Whether the prompt is showing (a line from another device clears it first).
        self.at_prompt = False
        self._posts_are_viewers = posts_are_viewers
        self._reread = reread
        self._idle = idle
        self._lost = lost
        #: The last cursor of the conversation's log shown (where a resubscribe resumes).
        self.cursor: str | None = None
        self._mine: set[str] = set()  # clientMessageIds sent from here
        self._printed: dict[str, str] = {}  # answer id → the text shown so far
        self._ended: dict[str, dict[str, Any]] = {}  # generationId → its terminal event
        self._viewers = 1
        #: Over HTTP a send's answer (the POST's) is a viewer while the turn runs, and
        #: until the first fall of the count after it ended (its departure).
        self._departing = False
        self._shown_others = 0

    # -- the session's own turn ------------------------------------------------------------

    def begin(self, turn: Turn) -> None:
        self.turn = turn
        self._mine.add(turn.client_message_id)

    def acknowledged(self, turn: Turn, conversation_id: str, generation_id: str | None) -> None:
        """The send was taken: its conversation (the session's from now) and generation."""
        turn.conversation_id = conversation_id
        if conversation_id != self.conversation:
            self.switch(conversation_id)
        if generation_id is not None:
            turn.identify(generation_id)
        if turn.generation_id is not None:
            ended = self._ended.pop(turn.generation_id, None)
            if ended is not None:  # its events came before the ack
                self._close_turn(turn, ended)

    def switch(self, conversation: str | None) -> None:
        """The next lines go to ``conversation`` (``None``: a new one); its presence
        starts afresh."""
        self.conversation = conversation
        self.cursor = None
        self._viewers, self._shown_others, self._departing = 1, 0, False

    def finish(self) -> None:
        self.turn = None
        self.out.stop_spinner()
        self._show_presence()

    # -- events ----------------------------------------------------------------------------

    async def show(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        if event.get("channel") == ACCOUNT:
            self._account(kind, event)
            return
        conversation = event.get("conversationId")
        if kind == "message" and self._is_mine(event) and self.conversation is None:
            self.switch(conversation if isinstance(conversation, str) else None)
        if kind == "unsubscribed":
            if conversation == self.conversation and conversation is not None:
                self._lost(str(conversation), self.cursor)
            return
        if conversation != self.conversation or conversation is None:
            return  # a conversation this session left (/new), still in flight
        epoch, seq = event.get("epoch"), event.get("seq")
        if isinstance(epoch, str) and isinstance(seq, int):
            self.cursor = f"{epoch}:{seq}"
        if self.json and kind not in ("reset",):
            self.out.json(event)
        match kind:
            case "message":
                if not self.json:
                    self._message(event)
            case "init":
                self._init(event)
            case "token":
                mid, text = event.get("messageId"), event.get("text")
                if isinstance(mid, str) and isinstance(text, str) and not self.json:
                    self._foreign_output()
                    self._printed[mid] = self._printed.get(mid, "") + text
                    self.out.text(text)
            case "tool":
                if not self.json:
                    self.out.note(tool_line(str(event.get("tool")), event.get("payload")))
            case "done" | "error" | "cancelled":
                self._end(kind, event)
            case "presence":
                viewers = event.get("viewers")
                if isinstance(viewers, int):
                    self._count_post(viewers)
                    self._viewers = viewers
                    if self.out.at_line_start:
                        self._show_presence()
            case "reset":
                await self._reset(conversation)

    def _is_mine(self, event: dict[str, Any]) -> bool:
        message = event.get("message")
        return isinstance(message, dict) and message.get("clientMessageId") in self._mine

    def _message(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict) or message.get("role") != "user":
            return
        turn = self.turn
        if self._is_mine(event):
            if turn is not None and message.get("clientMessageId") == turn.client_message_id:
                mid = message.get("id")
                turn.user_message_id = mid if isinstance(mid, str) else None
            return  # typed here: not echoed
        self._foreign_output()
        self.out.end_line()
        content = str(message.get("content", ""))
        self.out.text("".join(f"> {line}\n" for line in content.split("\n")))

    def _init(self, event: dict[str, Any]) -> None:
        mid = event.get("messageId")
        if isinstance(mid, str):
            self._printed.setdefault(mid, "")
        turn = self.turn
        if turn is None or turn.user_message_id is None:
            return
        if event.get("userMessageId") != turn.user_message_id:
            return
        gid = event.get("generationId")
        turn.message_id = mid if isinstance(mid, str) else None
        if isinstance(gid, str):
            turn.identify(gid)
            ended = self._ended.pop(gid, None)
            if ended is not None:
                self._close_turn(turn, ended)
        model = event.get("aiModel")
        if turn.asked_model and model and model != turn.asked_model and not self.json:
            self.out.note(f"({turn.asked_model} is answered by {model})")

    def _end(self, kind: str, event: dict[str, Any]) -> None:
        mid = event.get("messageId")
        if not self.json and isinstance(mid, str):
            full = event.get("fullText")
            if isinstance(full, str):
                self._complete(mid, full)
            self._printed.pop(mid, None)
            self.out.end_line()
            if kind == "done":
                self._sources(event.get("citations"))
        turn, gid = self.turn, event.get("generationId")
        ours = turn is not None and (
            (gid is not None and gid == turn.generation_id)
            or (mid is not None and mid == turn.message_id)
        )
        if turn is not None and ours:
            self._close_turn(turn, event)
            return
        if turn is not None and turn.generation_id is None and isinstance(gid, str):
            self._ended[gid] = event  # perhaps ours, its ack not back yet
            return
        if not self.json:  # another device's answer
            if kind == "error":
                self.out.note(f"[error {event.get('code')}] {event.get('error')}")
            elif kind == "cancelled":
                self.out.note("[cancelled]")
        self._show_presence()
        if turn is None:
            self._idle()

    def _close_turn(self, turn: Turn, event: dict[str, Any]) -> None:
        self._departing = self._posts_are_viewers  # the POST's answer closes after this
        kind = event.get("type")
        if kind == "error":
            code = event.get("code")
            text = str(event.get("error"))
            turn.result = CliError(f"{text} ({code})" if code else text)
        elif kind == "cancelled":
            if turn.cancel_requested:
                turn.stopped = True
            else:
                turn.result = CliError("the answer was cancelled")
        turn.ended.set()

    def _complete(self, mid: str, content: str) -> None:
        shown = self._printed.get(mid, "")
        if content.startswith(shown):
            self.out.text(content[len(shown) :])
        elif content:
            self.out.note("(the answer changed while offline; its full text follows)")
            self.out.end_line()
            self.out.text(content)
        self._printed[mid] = content

    def _sources(self, citations: Any) -> None:
        if not isinstance(citations, list) or not citations:
            return
        self.out.note("Sources:")
        for n, c in enumerate(citations, 1):
            if isinstance(c, dict):
                title = c.get("title") or c.get("uri")
                self.out.note(f"  [{n}] {title} — {c.get('uri')}")

    def _foreign_output(self) -> None:
        """Something of another device's turn is about to print: clear the prompt."""
        if self.at_prompt and self.out.err_tty:
            self.out.err.write("\r\x1b[K")
            self.out.err.flush()
            self.at_prompt = False

    async def _reset(self, conversation: str) -> None:
        """The cursor could not be replayed: complete the answers shown in part, and our
        turn, from the stored messages."""
        self.out.note("(missed events while disconnected; re-reading the conversation)")
        stored = {str(m.get("id")): m for m in await self._reread(conversation)}
        turn = self.turn
        wanted = set(self._printed) | ({turn.message_id} if turn and turn.message_id else set())
        for mid in wanted:
            message = stored.get(mid)
            if message is None or message.get("status") == "streaming":
                continue
            if not self.json:
                self._complete(mid, str(message.get("content", "")))
                self.out.end_line()
            self._printed.pop(mid, None)
            if turn is not None and mid == turn.message_id:
                status = message.get("status")
                if status == "cancelled" and turn.cancel_requested:
                    turn.stopped = True
                elif status != "complete":
                    turn.result = CliError(f"the answer ended with status {status}")
                turn.ended.set()

    # -- presence --------------------------------------------------------------------------

    def _show_presence(self) -> None:
        if self.conversation is None or not self.out.at_line_start:
            return
        turn = self.turn
        posting = self._posts_are_viewers and (
            self._departing or (turn is not None and not turn.ended.is_set())
        )
        others = max(0, self._viewers - 1 - int(posting))
        if others == self._shown_others:
            return
        if others == 1:
            self._say("(another device is watching)", tty_only=True)
        elif others > 1:
            self._say(f"({others} other devices are watching)", tty_only=True)
        else:
            self._say("(no other device is watching)", tty_only=True)
        self._shown_others = others

    def _count_post(self, viewers: int) -> None:
        if viewers < self._viewers and self._departing:
            self._departing = False

    def _say(self, line: str, *, tty_only: bool = False) -> None:
        """A note between turns: the prompt showing is cleared first and drawn again
        after it."""
        if tty_only and not self.out.err_tty:
            return
        prompt = self.at_prompt
        self._foreign_output()
        self.out.note(line)
        if prompt and self.turn is None:
            self._idle()

    # -- the account channel ---------------------------------------------------------------

    def _account(self, kind: str, event: dict[str, Any]) -> None:
        if self.conversation is None or event.get("conversationId") != self.conversation:
            return
        conversation = str(event.get("conversationId"))
        if kind == "conversation.renamed" and not self.json:
            data = event.get("conversation")
            title = data.get("shortTitle") if isinstance(data, dict) else None
            if isinstance(title, str) and title:
                self._say(f"(this conversation is titled “{title}”)", tty_only=True)
        elif kind == "conversation.deleted":
            self.gone(conversation)

    def gone(self, conversation: str, how: str = "was deleted") -> None:
        """The session's conversation is no more: the next line opens a new one."""
        if conversation != self.conversation:
            return  # said already
        self.switch(None)
        self.out.stop_spinner()
        self.out.end_line()
        self._say(
            f"(conversation {conversation} {how}; your next message starts a new conversation)"
        )
        turn = self.turn
        if turn is not None and turn.conversation_id == conversation and not turn.ended.is_set():
            turn.result = CliError("the conversation was deleted")
            turn.ended.set()
