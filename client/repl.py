"""``cero chat -i`` (and ``cero chat`` alone on a terminal): the interactive mode.

Each line read is a send in the same conversation; the first one creates the conversation
unless ``-c ID`` / ``-C`` named one. The session keeps one WebSocket
(:mod:`client.repl_link`, on the client library): its sends (``send`` frames with a
``clientMessageId``, repeated safely after a reconnect), its cancels, and the live events
of its conversation from every device and of the account channel. A line sent from another
device or the web page shows here as ``> …`` with its answer streaming; presence is a note
when another device watches; the conversation deleted elsewhere is said, and the next line
opens a new one (:mod:`client.repl_screen`). A dropped socket resumes from its cursors;
``4001`` (the session revoked) ends the mode with exit 3. Behind a proxy that refuses
WebSockets it says so once and goes on over HTTP: ``POST /api/chat``, ``POST …/cancel``
and Server-Sent Events.

Ctrl-C during an answer cancels it (the partial answer is kept) and the prompt comes back;
a second Ctrl-C quits. With ``--detach-on-interrupt`` (or ``CERO_DETACH_ON_INTERRUPT=1``)
Ctrl-C during an answer leaves it running on the server instead and ends the session
(exit 130), naming ``cero watch ID`` and ``cero cancel ID``. Ctrl-C at the prompt says
how to leave; Ctrl-D (end of input) or ``/exit`` leaves. Commands: ``/new``,
``/model [ID]``, ``/help``, ``/exit``.

Lines come from :mod:`client.repl_input`: on a terminal, prompt_toolkit's prompt (line
editing, Up/Down and Ctrl-R through a history file, :mod:`client.history`; live events
printed above the line being typed); from a pipe or a file, a daemon thread reading stdin.
Either way the prompt is on stderr, so stdout holds only the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from client.context import Context
from client.errors import CliError, Exit
from client.friendly import cli_hints, network_reason
from client.generate import detach_on_interrupt, generation_body
from client.history import history_path, open_history
from client.interrupt import Interrupted, Presses, detached
from client.repl_input import Lines, PromptLines, StdinLines, on_a_terminal
from client.repl_link import HttpLink, Link, open_link
from client.repl_screen import Screen, Turn
from client.sdk import (
    ApiError,
    CeroClient,
    CeroError,
    ConnectionLost,
    NotFound,
    SessionEnded,
    Unauthorized,
)

log = structlog.get_logger("cero.repl")
T = TypeVar("T")

HELP = """commands:
  /new         start a new conversation (the next line opens it)
  /model [ID]  answer with model ID from now on (`cero models` lists them); no ID: show it
  /help        this list
  /exit        leave (or Ctrl-D)
Ctrl-C stops the answer being written (the text so far is kept); twice quits."""


COMMANDS = frozenset({"new", "model", "help", "exit", "quit"})


def is_command(line: str) -> bool:
    """``/new``, ``/model x``…, and any other lone ``/word`` (said to be unknown); a line
    like ``/etc/hosts: what is it?`` is a message."""
    words = line.strip().split()
    if not words or not words[0].startswith("/"):
        return False
    name = words[0][1:]
    return name in COMMANDS or (len(words) == 1 and "/" not in name and name.isalpha())


def cli_error(server: str, exc: CeroError) -> CliError:
    """A library failure as the one line the CLI prints, with its exit code."""
    if isinstance(exc, SessionEnded | Unauthorized):
        return CliError(
            f"the server at {server} ended this session (signed out, revoked or expired); "
            "run `cero login`",
            Exit.AUTH,
        )
    if isinstance(exc, ApiError):
        text = cli_hints(exc.error)
        suffix = f" ({exc.code})" if exc.code and exc.code not in text else ""
        return CliError(f"{text}{suffix}", reason=exc.code)
    if isinstance(exc, ConnectionLost):
        reason = network_reason(exc.__cause__) if exc.__cause__ is not None else str(exc)
        return CliError(f"lost the connection to {server} ({reason})", Exit.UNREACHABLE)
    return CliError(str(exc))


class Session:
    """One interactive session: the conversation and model the next line goes to, and the
    link its lines and events travel on."""

    def __init__(self, ctx: Context, link: Link, cero: CeroClient, conversation: str | None):
        self.ctx = ctx
        self.link = link
        self.cero = cero
        self.model: str | None = ctx.args.model or None
        self.interactive = sys.stdin.isatty()
        self.json = bool(ctx.args.json)
        #: Ctrl-C during an answer leaves it running and ends the session (exit 130).
        self.detach = detach_on_interrupt(ctx)
        self.lines = self._lines()
        self.reading = False  # waiting for a line (the prompt may be redrawn)
        self.screen = Screen(
            ctx.out,
            json=self.json,
            conversation=conversation,
            posts_are_viewers=link.posts_are_viewers,
            reread=self._stored,
            idle=self._idle,
            lost=self._lost,
        )
        self._following_again: set[str] = set()
        #: Set when the link ends for good (the session revoked, …): what to say.
        self.dead: asyncio.Future[CliError] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump = asyncio.get_running_loop().create_task(self._events())

    def _lines(self) -> Lines:
        """On a terminal, the prompt with line editing and history; else stdin's lines."""
        if not on_a_terminal():
            return StdinLines(sys.stdin)
        disabled = bool(getattr(self.ctx.args, "no_history", False))
        history, problem = open_history(history_path(self.ctx.environ, disabled=disabled))
        if problem is not None:
            self.ctx.out.note(f"(history not kept: {problem})")
        return PromptLines(history, self.ctx.out, self.ctrl_c_at_prompt)

    @property
    def conversation(self) -> str | None:
        return self.screen.conversation

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump

    # -- the live events -------------------------------------------------------------------

    async def _events(self) -> None:
        error: CliError
        try:
            async for event in self.link.events():
                async with self.lines.above():  # the line being typed is drawn again after
                    try:
                        await self.screen.show(event)
                    except CeroError as exc:  # a REST re-read after `reset`
                        self.ctx.out.note(f"(could not re-read the conversation: {exc})")
            error = CliError(f"the connection to {self.ctx.server} ended", Exit.UNREACHABLE)
        except asyncio.CancelledError:
            raise
        except CeroError as exc:
            error = cli_error(self.ctx.server, exc)
        except BrokenPipeError:
            error = CliError("stdout was closed")
        if not self.dead.done():
            self.dead.set_result(error)

    async def _stored(self, conversation: str) -> list[dict[str, Any]]:
        answer = await self.cero.messages(conversation)
        return [dict(m) for m in answer["messages"]]

    def _lost(self, conversation: str, cursor: str | None) -> None:
        """The server ended the conversation's subscription: deleted, or its actor
        stopped. Follow it again from the cursor; a deleted one answers ``not_found``."""
        if conversation in self._following_again:
            return
        self._following_again.add(conversation)
        task = asyncio.get_running_loop().create_task(self._follow_again(conversation, cursor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_again(self, conversation: str, cursor: str | None) -> None:
        try:
            await asyncio.sleep(0.25)
            await self.link.follow(conversation, after=cursor)
        except NotFound:
            async with self.lines.above():
                self.screen.gone(conversation)
        except CeroError as exc:
            log.info("repl_follow_again_failed", reason=str(exc))
            async with self.lines.above():
                self.screen.gone(conversation, "could not be followed again")
        finally:
            self._following_again.discard(conversation)

    def _idle(self) -> None:
        """Another device's answer ended while the prompt was waiting: show it again."""
        if self.reading and not self.screen.at_prompt:
            self.prompt()

    async def race(self, work: Awaitable[T]) -> T:
        """``work``, unless the link ends first (then its error is raised)."""
        task = asyncio.ensure_future(work)
        either: set[asyncio.Future[Any]] = {task, self.dead}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise self.dead.result()

    # -- lines -----------------------------------------------------------------------------

    def prompt(self) -> None:
        """The prompt on stderr, when the line source does not draw its own."""
        if self.interactive and not self.lines.draws_prompt:
            self.ctx.out.err.write("› ")
            self.ctx.out.err.flush()
            self.screen.at_prompt = True

    async def read(self) -> str | None:
        self.reading = True
        try:
            return await self.race(self.lines.next())
        finally:
            self.reading = False
            self.screen.at_prompt = False

    def ctrl_c_at_prompt(self) -> None:
        """Ctrl-C while no answer is being written: how to leave (the prompt comes back)."""
        if self.lines.interrupt():
            return  # the prompt takes it as the key, and calls this again
        if self.interactive and not self.lines.draws_prompt:
            self.ctx.out.err.write("\n")  # after the prompt
        self.ctx.out.note("(Ctrl-D or /exit leaves)")
        self.prompt()

    async def command(self, line: str) -> bool:
        """A ``/command``; ``False`` to leave."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        note = self.ctx.out.note
        match name:
            case "exit" | "quit":
                return False
            case "new":
                old = self.screen.conversation
                self.screen.switch(None)
                if old is not None:
                    await self.race(self.link.forget(old))
                note("(a new conversation starts with your next message)")
            case "model":
                if rest:
                    self.model = rest
                    note(f"(answering with {rest} from now on)")
                else:
                    note(f"(model: {self.model or 'the server default'})")
            case "help":
                note(HELP)
            case _:
                note(f"(unknown command /{name}; /help lists them)")
        return True

    # -- a turn ----------------------------------------------------------------------------

    async def send(self, text: str) -> None:
        """One turn; a refused or failed answer is one error line, and the session goes on.
        Ctrl-C cancels the answer (over the link); a second one quits. With
        ``--detach-on-interrupt`` Ctrl-C leaves the answer running and ends the session
        (:func:`client.interrupt.detached`)."""
        out = self.ctx.out
        body = generation_body(self.ctx.args, message=text)
        if self.model:
            body["aiModel"] = self.model
        if self.conversation:
            body["conversationId"] = self.conversation
        new = self.conversation is None
        turn = Turn(body["clientMessageId"], asked_model=self.model)
        cancels: list[asyncio.Task[None]] = []
        detaching = False

        def send_cancel() -> None:
            if turn.generation_id and turn.conversation_id and not cancels:
                cancels.append(asyncio.get_running_loop().create_task(self._cancel(turn)))

        def first_press() -> None:
            nonlocal detaching
            if self.detach:
                detaching = True
                out.stop_spinner()
                if turn.conversation_id is not None and presses.task is not None:
                    presses.task.cancel()  # turned into `detached` below
                else:  # the server has not taken the message yet: as soon as it has
                    out.note("(detaching once the server has the message; Ctrl-C again quits)")
                return
            turn.cancel_requested = True
            out.stop_spinner()
            if out.err_tty and not out.at_line_start:
                out.err.write("\n")  # not after the answer's last word on the terminal
            out.note("(stopping the answer; the text so far is kept. Ctrl-C again quits now)")
            send_cancel()

        presses = Presses(first_press)
        self.screen.begin(turn)
        if not self.json:
            out.start_spinner("sending")
        try:
            with self.ctx.ctrl_c.handling(presses):
                try:
                    conversation, generation = await self.race(self.link.send(body))
                except CeroError as exc:
                    error = cli_error(self.ctx.server, exc)
                    if error.code == Exit.AUTH:
                        raise error from None
                    out.stop_spinner()
                    out.end_line()
                    out.error(error.message)
                    return
                self.screen.acknowledged(turn, conversation, generation)
                if detaching:
                    out.end_line()
                    raise detached(conversation)
                if new and not self.json:
                    out.tty_note(f"(conversation {conversation})")
                    if not turn.ended.is_set() and out.at_line_start:
                        out.start_spinner("waiting for the answer")
                await self.race(self.link.follow(conversation))
                if not turn.identified.is_set():
                    await self.race(_first(turn.identified.wait(), turn.ended.wait()))
                if turn.cancel_requested:
                    send_cancel()
                await self.race(turn.ended.wait())
        except asyncio.CancelledError:
            detach_now = detaching and turn.conversation_id is not None
            if presses.count < 2 and not detach_now:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            out.end_line()
            if detach_now and turn.conversation_id is not None:
                raise detached(turn.conversation_id) from None
            where = turn.conversation_id or "ID"
            if cancels:
                line = f"interrupted; the answer was asked to stop (cero messages {where})"
            else:
                line = f"interrupted; the answer may go on: cero cancel {where}"
            raise Interrupted(line) from None
        finally:
            self.screen.finish()
            for task in cancels:
                task.cancel()
        if turn.stopped and not self.json:
            out.end_line()
            kept = f"cero messages {turn.conversation_id}"
            out.note(f"(answer cancelled; the partial answer is kept: {kept})")
        elif turn.result is not None:
            out.end_line()
            out.error(turn.result.message)

    async def _cancel(self, turn: Turn) -> None:
        """The ``cancel`` (a frame, or ``POST …/cancel``); its ``cancelled`` event ends
        the turn."""
        assert turn.conversation_id is not None and turn.generation_id is not None
        try:
            stopped = await self.link.cancel(turn.conversation_id, turn.generation_id)
        except CeroError as exc:
            error = cli_error(self.ctx.server, exc)
            self.ctx.out.note(f"(could not stop the answer: {error.message})")
            return
        if not stopped:
            self.ctx.out.note("(the answer had already ended)")


async def _first(*waits: Awaitable[Any]) -> None:
    """Until the first of ``waits`` is done."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def run(ctx: Context, conversation: str | None, first: str | None) -> int:
    """The read-send loop until EOF or ``/exit``."""
    out = ctx.out
    token = ctx.credential().token
    async with CeroClient(ctx.server, token) as cero:
        try:
            link = await open_link(cero)
        except CeroError as exc:
            error = cli_error(ctx.server, exc)
            if isinstance(exc, ConnectionLost):
                reason = error.message.partition("(")[2].rstrip(")")
                error = CliError(
                    f"cannot reach the server at {ctx.server}: {reason}", Exit.UNREACHABLE
                )
            raise error from None
        if isinstance(link, HttpLink) and link.refused is not None:
            how = f"HTTP {link.refused.status}" if link.refused.status else "closed"
            out.note(
                f"(the WebSocket to {ctx.server} was refused on the way ({how}); "
                "chatting over HTTP and Server-Sent Events)"
            )
        session = Session(ctx, link, cero, conversation)
        try:
            return await _loop(ctx, session, conversation, first)
        finally:
            await session.close()
            await link.close()


async def _loop(
    ctx: Context,
    session: Session,
    conversation: str | None,
    first: str | None,
) -> int:
    out = ctx.out
    if conversation is not None:
        try:
            await session.race(session.link.follow(conversation))
        except CeroError as exc:
            raise cli_error(ctx.server, exc) from None
    where = f"conversation {conversation}" if conversation else "a new conversation"
    out.tty_note(f"(chatting in {where}; /help for commands, Ctrl-D to leave)")

    # The whole session: a Ctrl-C between two answers is never a KeyboardInterrupt;
    # during an answer, the turn's own handler (stop it; twice: quit) comes first.
    with ctx.ctrl_c.handling(session.ctrl_c_at_prompt):
        if first is not None:
            await session.send(first)
        while True:
            session.prompt()
            line = await session.read()
            if line is None:
                if session.interactive and not session.lines.draws_prompt:
                    out.err.write("\n")
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if is_command(text):
                if not await session.command(text.strip()):
                    break
                continue
            await session.send(text)
    return Exit.OK
