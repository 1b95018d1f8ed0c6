"""``cero chat -i`` (and ``cero chat`` alone on a terminal): the interactive mode.

Each line read is a send in the same conversation (``POST /api/chat``, streamed like
``cero chat``, resumed the same way after a drop); the first one creates the conversation
unless ``-c ID`` / ``-C`` named one. Ctrl-C during an answer cancels it (the partial
answer is kept) and the prompt comes back; a second Ctrl-C quits. Ctrl-C at the prompt
says how to leave; Ctrl-D (end of input) or ``/exit`` leaves. Commands: ``/new``,
``/model [ID]``, ``/help``, ``/exit``.

Lines come from a daemon thread reading stdin (works for a terminal, a pipe and a file
alike, and a blocked read never holds up the exit); on a terminal the prompt is written
to stderr, so stdout holds only the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import TextIO

from client.api import Api
from client.context import Context
from client.errors import CliError, Exit
from client.generate import generate, generation_body

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


class StdinLines:
    """Lines of ``stream`` as an asyncio queue, read by a daemon thread; ``None`` at EOF."""

    def __init__(self, stream: TextIO) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stream = stream
        threading.Thread(target=self._read, name="cero-stdin", daemon=True).start()

    def _read(self) -> None:
        # RuntimeError: the loop is closed (the command is over; this thread just ends).
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            while line := self._stream.readline():
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def next(self) -> str | None:
        return await self._queue.get()


class Session:
    """One interactive session: the conversation and model the next line goes to."""

    def __init__(self, ctx: Context, api: Api, conversation: str | None) -> None:
        self.ctx = ctx
        self.api = api
        self.conversation = conversation
        self.model: str | None = ctx.args.model or None
        self.interactive = sys.stdin.isatty()

    def prompt(self) -> None:
        if self.interactive:
            self.ctx.out.err.write("› ")
            self.ctx.out.err.flush()

    def command(self, line: str) -> bool:
        """A ``/command``; ``False`` to leave."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        note = self.ctx.out.note
        match name:
            case "exit" | "quit":
                return False
            case "new":
                self.conversation = None
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

    async def send(self, text: str) -> None:
        """One turn; a refused or failed answer is one error line, and the session goes on."""
        body = generation_body(self.ctx.args, message=text)
        if self.model:
            body["aiModel"] = self.model
        if self.conversation:
            body["conversationId"] = self.conversation
        try:
            follower = await generate(
                self.ctx,
                self.api,
                "/api/chat",
                body,
                json=bool(self.ctx.args.json),
                asked_model=self.model,
                conversation_id=self.conversation,
            )
        except CliError as exc:
            if exc.code in (Exit.AUTH, Exit.INTERRUPTED):
                raise
            self.ctx.out.end_line()
            self.ctx.out.error(exc.message)
            return
        self.conversation = follower.conversation_id or self.conversation
        if follower.result is not None:
            self.ctx.out.error(follower.result.message)


async def run(ctx: Context, conversation: str | None, first: str | None) -> int:
    """The read-send loop until EOF or ``/exit``."""
    out = ctx.out
    lines = StdinLines(sys.stdin)
    async with ctx.signed_in() as api:
        session = Session(ctx, api, conversation)
        where = f"conversation {conversation}" if conversation else "a new conversation"
        out.tty_note(f"(chatting in {where}; /help for commands, Ctrl-D to leave)")

        def at_prompt() -> None:
            if session.interactive:
                out.err.write("\n")  # after the prompt
            out.note("(Ctrl-D or /exit leaves)")
            session.prompt()

        # The whole session: a Ctrl-C between two answers is never a KeyboardInterrupt;
        # during an answer, generate()'s own handler (stop it; twice: quit) comes first.
        with ctx.ctrl_c.handling(at_prompt):
            if first is not None:
                await session.send(first)
            while True:
                session.prompt()
                line = await lines.next()
                if line is None:
                    if session.interactive:
                        out.err.write("\n")
                    break
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                if is_command(text):
                    if not session.command(text.strip()):
                        break
                    continue
                await session.send(text)
    return Exit.OK
