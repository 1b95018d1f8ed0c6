"""``cero``: sign in with the device flow, chat, and follow conversations live.

Commands: login, logout, whoami, chat (``-i``: :mod:`client.repl`), watch (``--account``:
:mod:`client.account`), conversations, messages, cancel, models; a conversation's
branches (regenerate, edit, continue, branches, switch) are in :mod:`client.branches`,
rename and delete in :mod:`client.manage`, ``completion`` in :mod:`client.completion`.
The server is ``--server``, else ``CERO_API_URL`` (or ``CERO_URL``), else
``http://localhost:3001``. Errors are one line on stderr and a non-zero exit code
(:class:`client.errors.Exit`); Ctrl-C is handled per command (:mod:`client.interrupt`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import structlog

from client import __version__
from client.account import PATH as ACCOUNT_EVENTS
from client.account import AccountFollower
from client.attach import check_files, upload_all
from client.branches import add_commands as add_branch_commands
from client.completion import add_commands as add_completion_commands
from client.context import DEFAULT_SERVER, Command, Context
from client.device_login import device_login
from client.errors import CliError, Exit
from client.examples import epilog
from client.export import add_commands as add_export_commands
from client.follow import Follower, follow
from client.friendly import network_reason
from client.generate import (
    RAW_HELP,
    add_generation_options,
    generation_body,
    message_text,
    stream_generation,
)
from client.instructions import add_commands as add_instruction_commands
from client.manage import add_commands as add_manage_commands
from client.output import Output
from client.search import add_commands as add_search_commands
from client.terminal_text import clean
from client.tree import sibling_marker

# -- commands ------------------------------------------------------------------------------


async def cmd_login(ctx: Context) -> int:
    browser = ctx.environ if not ctx.args.no_browser and ctx.out.err_tty else None
    ctx.store.check_writable()  # before a code is asked for: no approval wasted on it
    async with ctx.api() as api:
        token, user = await device_login(api, say=ctx.out.note, browser=browser)
        try:
            saved = ctx.store.save(ctx.server, token, user)
        except CliError:
            # Not kept, so never usable: revoke it rather than leave a live session behind.
            with contextlib.suppress(CliError):
                await api.request("POST", "/api/auth/sign-out", json={})
            raise
    where = "the system keyring" if saved.store == "keyring" else str(ctx.store.path)
    ctx.out.note(f"Signed in to {ctx.server} as {_who(user)}; the token is kept in {where}.")
    return Exit.OK


async def cmd_logout(ctx: Context) -> int:
    found = ctx.store.load(ctx.server)
    if found is None:
        ctx.out.note(f"Not signed in to {ctx.server}.")
        return Exit.OK
    problem: CliError | None = None
    async with ctx.api(found.token) as api:
        try:
            await api.request("POST", "/api/auth/sign-out", json={})
        except CliError as exc:
            if exc.code != Exit.AUTH:  # an already-revoked token is signed out anyway
                problem = exc
    ctx.store.forget(ctx.server)
    if problem is not None:
        raise CliError(
            f"removed the saved token, but could not revoke it on the server: {problem.message}",
            problem.code,
        )
    ctx.out.note(f"Signed out of {ctx.server}.")
    return Exit.OK


async def cmd_whoami(ctx: Context) -> int:
    async with ctx.signed_in() as api:
        answer = await api.request("GET", "/api/user/whoami")
    user = answer.get("user", {}) if isinstance(answer, dict) else {}
    if ctx.args.json:
        ctx.out.json(answer)
    else:
        ctx.out.text(f"{_who(user)} on {ctx.server}\n")
    return Exit.OK


def _who(user: dict[str, Any]) -> str:
    name, email = user.get("name") or "", user.get("email") or ""
    return f"{name} <{email}>" if name and email else str(name or email or user.get("id", "?"))


async def cmd_chat(ctx: Context) -> int:
    conversation: str | None = ctx.args.conversation
    message: str | None = ctx.args.message
    continue_last: bool = ctx.args.continue_last
    interactive: bool = ctx.args.interactive
    files = check_files(ctx.args.attach)  # a file it cannot read: nothing is uploaded
    if message is None and conversation is None and not interactive:
        if not sys.stdin.isatty():
            raise CliError(
                "chat needs a message (- reads it from stdin; -i: interactive)", Exit.USAGE
            )
        interactive = True  # `cero chat` alone on a terminal: the interactive mode
    if message is None and conversation is not None and not interactive:
        # `cero chat -c "hi"` (like `llm -c`): argparse gave the message to -c, so it
        # continues the most recent conversation; `-c ID "hi"` still names one.
        message, conversation, continue_last = conversation, None, True
    if interactive and files:
        raise CliError("--attach goes with one message, not the interactive mode", Exit.USAGE)
    if continue_last:
        conversation = await _newest_conversation(ctx)
    if interactive:
        # Imported here: the interactive mode's prompt_toolkit and WebSocket code are a
        # quarter of a one-shot command's start-up (136 of 580 ms, `python -X importtime`).
        from client import repl

        first = message_text(message) if message is not None else None
        return await repl.run(ctx, conversation, first)
    assert message is not None
    body = generation_body(ctx.args, message=message_text(message))
    if conversation:
        body["conversationId"] = conversation
    if files:  # uploaded first; a refused one is one line, and nothing is sent
        body["attachments"] = await upload_all(ctx, files)
    return await stream_generation(ctx, "/api/chat", body)


async def _newest_conversation(ctx: Context) -> str:
    """``chat -C``: the conversation updated last (``GET /api/conversations?limit=1``)."""
    async with ctx.signed_in() as api:
        page = await api.request("GET", "/api/conversations", params={"limit": "1"})
    listed = page.get("conversations") if isinstance(page, dict) else None
    if not listed or not isinstance(listed[0], dict) or not listed[0].get("id"):
        raise CliError("you have no conversation to continue yet")
    return str(listed[0]["id"])


async def cmd_watch(ctx: Context) -> int:
    if ctx.args.account == bool(ctx.args.conversation_id):
        raise CliError("watch needs a conversation ID or --account (one of the two)", Exit.USAGE)
    if ctx.args.account:
        return await until_ctrl_c(ctx, _watch_account(ctx))
    return await until_ctrl_c(ctx, _watch_conversation(ctx))


async def until_ctrl_c(ctx: Context, run: Coroutine[Any, Any, None]) -> int:
    """Run ``run`` until it ends or Ctrl-C: watching ends there, and that is success."""
    task = asyncio.current_task()
    pressed = False

    def stop() -> None:
        nonlocal pressed
        pressed = True
        if task is not None:
            task.cancel()

    try:
        with ctx.ctrl_c.handling(stop):
            await run
    except asyncio.CancelledError:
        if not pressed or task is None:
            raise
        task.uncancel()
        ctx.out.stop_spinner()
        ctx.out.end_line()
        if ctx.out.err_tty:
            ctx.out.err.write("\n")  # after the terminal's ^C
        ctx.out.tty_note("(stopped watching)")
    return Exit.OK


async def _watch_account(ctx: Context) -> None:
    async with ctx.signed_in() as api:
        follower = AccountFollower(api, ctx.out, json=ctx.args.json)

        def opener(cursor: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            return api.stream("GET", ACCOUNT_EVENTS, last_event_id=cursor)

        async def connected(resp: aiohttp.ClientResponse, again: bool) -> None:
            if not again:
                ctx.out.tty_note("(watching your account; Ctrl-C to stop)")

        await follow(follower, opener, opener, on_connect=connected, max_failures=10)


async def _watch_conversation(ctx: Context) -> None:
    conversation = ctx.args.conversation_id
    path = f"/api/conversations/{conversation}/events"
    async with ctx.signed_in() as api:
        follower = Follower(
            api,
            ctx.out,
            "watch",
            json=ctx.args.json,
            once=ctx.args.once,
            conversation_id=conversation,
            history=ctx.args.history,
        )

        def opener(cursor: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            # Nothing seen yet: from the answer in progress's `init`, if one streams.
            return api.stream("GET", path, last_event_id=cursor or follower.resume)

        async def connected(resp: aiohttp.ClientResponse, again: bool) -> None:
            if not again:
                ctx.out.tty_note(f"(watching {conversation}; Ctrl-C to stop)")
            if follower.epoch is None and follower.resume is None:  # live from now
                await follower.join()

        # Messages over REST first (the last few printed), then subscribe: with the
        # cursor of an answer streaming.
        await follower.joining()

        await follow(follower, opener, opener, on_connect=connected, max_failures=10)


async def cmd_conversations(ctx: Context) -> int:
    async with ctx.signed_in() as api:
        cursor: str | None = None
        shown = 0
        while True:
            params = {"limit": str(min(100, ctx.args.limit - shown))}
            if cursor:
                params["cursor"] = cursor
            page = await api.request("GET", "/api/conversations", params=params)
            for c in page.get("conversations", []):
                shown += 1
                if ctx.args.json:
                    ctx.out.json(c)
                else:
                    ctx.out.text(f"{c['id']}  {c['updatedAt'][:16]}  {c['shortTitle']}\n")
            cursor = page.get("nextCursor")
            if not cursor or shown >= ctx.args.limit:
                break
    return Exit.OK


async def cmd_messages(ctx: Context) -> int:
    async with ctx.signed_in() as api:
        answer = await api.request("GET", f"/api/conversations/{ctx.args.conversation_id}/messages")
    if ctx.args.json:
        ctx.out.json(answer)
        return Exit.OK
    for m in answer.get("messages", []):
        who = "you" if m.get("role") == "user" else m.get("aiModel") or "assistant"
        status = m.get("status")
        mark = "" if status == "complete" else f" ({status})"
        siblings = sibling_marker(m)  # one of several alternatives: `cero branches` draws them
        if siblings:
            mark = f" {siblings}{mark}"
        ctx.out.text(f"[{m.get('timestamp')}] {who}{mark}:\n{m.get('content', '')}\n\n")
    return Exit.OK


async def cmd_cancel(ctx: Context) -> int:
    body = {"generationId": ctx.args.generation} if ctx.args.generation else {}
    async with ctx.signed_in() as api:
        answer = await api.request(
            "POST", f"/api/conversations/{ctx.args.conversation_id}/cancel", json=body
        )
    cancelled = bool(answer.get("cancelled")) if isinstance(answer, dict) else False
    ctx.out.note("Cancelled the answer." if cancelled else "No answer was running.")
    return Exit.OK


async def cmd_models(ctx: Context) -> int:
    async with ctx.api() as api:
        answer = await api.request("GET", "/api/models")
    if ctx.args.json:
        ctx.out.json(answer)
        return Exit.OK
    for m in answer.get("models", []):
        default = " (default)" if m.get("default") else ""
        ctx.out.text(f"{m.get('id')}{default}  {m.get('status')}  {m.get('name')}\n")
    for alias, target in (answer.get("fallbacks") or {}).items():
        ctx.out.text(f"{alias}  answered by {target}\n")
    if answer.get("note"):
        ctx.out.note(str(answer["note"]))
    return Exit.OK


# -- arguments -----------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


TOP_EPILOG = """examples:
  cero login                      # sign in (device flow: approve in a browser)
  cero chat "explain SSE"         # ask; the answer streams (Ctrl-C stops it)
  cero chat -d "a long essay"     # Ctrl-C leaves the answer running (cero watch ID)
  cero chat                       # the interactive mode on a terminal (or cero chat -i)
  cero watch --account            # what happens in your account, live
  cero <command> --help           # each command's options and examples

exit codes: 0 ok, 1 failed, 2 usage, 3 not signed in, 4 server unreachable, 130 Ctrl-C.
shell completion: eval "$(cero completion bash)" (or zsh; fish: see cero completion --help)."""


def at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"the Cero API server (default: $CERO_API_URL, else {DEFAULT_SERVER})",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logs"
    )
    top = argparse.ArgumentParser(
        prog="cero",
        description="Chat with a Cero API server from the terminal.",
        parents=[common],
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"cero {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common],
            help=text,
            description=text,
            epilog=epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add("login", cmd_login, "Sign in with the device flow (approve in a browser).")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    add("logout", cmd_logout, "Revoke this CLI's session on the server and forget the token.")
    p = add("whoami", cmd_whoami, "Show the signed-in user.")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p = add("chat", cmd_chat, "Send a message and stream the answer to stdout.")
    p.add_argument("message", nargs="?", help="the message; - reads it from stdin")
    add_generation_options(p)
    # `-c ID MESSAGE` continues that conversation; `-c MESSAGE` alone (argparse hands the
    # message to -c) continues the most recent one, like `llm -c`; `-C` says so explicitly.
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--conversation",
        "-c",
        metavar="ID",
        help="continue this conversation; `-c MESSAGE` alone: your most recent one",
    )
    which.add_argument(
        "--continue",
        "--continue-last",
        "-C",
        dest="continue_last",
        action="store_true",
        help="continue your most recent conversation",
    )
    p.add_argument(
        "--interactive",
        "-i",
        action="store_true",
        help="a chat session: each line a message (the default on a terminal without one)",
    )
    p.add_argument(
        "--no-history",
        action="store_true",
        help="interactive mode: keep no history file of the lines typed (also $CERO_HISTORY=0)",
    )
    p.add_argument(
        "--attach",
        "-a",
        action="append",
        default=[],
        metavar="FILE",
        help="send FILE with the message (an image, PDF, text or audio; repeatable, up to 10)",
    )
    p = add(
        "watch",
        cmd_watch,
        "Follow a conversation live, or with --account your whole account (resumes after "
        "network drops; Ctrl-C stops).",
    )
    p.add_argument("conversation_id", metavar="ID", nargs="?")
    p.add_argument(
        "--account",
        action="store_true",
        help="follow your account: conversations created, renamed, deleted; answers; sessions",
    )
    p.add_argument(
        "--history",
        type=at_least_zero,
        default=6,
        metavar="N",
        help="print the conversation's last N messages first (default 6; 0: none)",
    )
    p.add_argument("--json", action="store_true", help="print the events as NDJSON")
    p.add_argument("--raw", action="store_true", help=RAW_HELP)
    p.add_argument("--once", action="store_true", help="exit when the next answer ends")
    p = add("conversations", cmd_conversations, "List your conversations, newest first.")
    p.add_argument("--limit", type=positive, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p = add("messages", cmd_messages, "Print a conversation's messages.")
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p.add_argument("--raw", action="store_true", help=RAW_HELP)
    p = add("cancel", cmd_cancel, "Stop the answer being generated in a conversation.")
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--generation", metavar="GID", help="only this generation")
    p = add("models", cmd_models, "List the models the server offers.")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    add_branch_commands(add)
    add_export_commands(add)
    add_instruction_commands(add)
    add_manage_commands(add)
    add_search_commands(add)
    add_completion_commands(add)
    top.set_defaults(whole_parser=top)  # for `cero completion`, which describes it
    return top


def _clean_values(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Log values can be the server's text (``-v``): filtered like every other line."""
    return {k: clean(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging(verbose: bool) -> None:
    structlog.configure(
        processors=[
            _clean_values,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(bool(getattr(args, "verbose", False)))
    out = Output(raw=bool(getattr(args, "raw", False)))
    server = "the server"
    try:
        ctx = Context(args, dict(os.environ), out)
        server = ctx.server
        command: Command = args.func
        return asyncio.run(command(ctx))
    except CliError as exc:
        out.stop_spinner()
        out.end_line()
        if exc.code == Exit.INTERRUPTED:
            out.err.write(f"cero: {clean(exc.message)}\n")
        else:
            out.error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        out.end_line()
        out.err.write("cero: interrupted\n")
        return Exit.INTERRUPTED
    except BrokenPipeError:  # `cero chat … | head -1`: the reader is gone, that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return Exit.OK
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:  # a network failure
        out.stop_spinner()
        out.end_line()
        out.error(f"the connection to {server} failed: {network_reason(exc)}")
        return Exit.UNREACHABLE
