"""Starting a generation and streaming its answer to stdout.

``cero chat`` (``POST /api/chat``) and the branch operations ``regenerate``, ``edit`` and
``continue`` (``POST /api/conversations/{id}/messages/{messageId}/…``) all answer with the
same stream, so one function follows them: SSE, resumed after a drop from the last cursor
on ``GET …/events``, or — before the first event — by the same request again (its
``clientMessageId`` gets the same generation back, never a second one). One retry per
drop: a server that stays away is one line naming ``cero watch ID``. Ctrl-C posts
``…/cancel`` with the answer's ``generationId`` and waits for its ``cancelled`` event (the
partial answer is kept); a second Ctrl-C quits at once. With ``--detach-on-interrupt``
(or ``CERO_DETACH_ON_INTERRUPT=1``) Ctrl-C only stops reading: the answer goes on on the
server, and the exit (130) names ``cero watch ID`` to follow it and ``cero cancel ID``
to stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp

from client.api import Api
from client.context import Context
from client.errors import CliError, Exit
from client.follow import Follower, follow
from client.interrupt import Interrupted, Presses, detached

TOOLS = ("google_search", "url_context", "code_execution")
RAW_HELP = "print the text with its control characters and escape sequences (not for a terminal)"
DETACH_ENV = "CERO_DETACH_ON_INTERRUPT"


def message_text(text: str) -> str:
    """A message argument: ``-`` reads it from stdin; blank is a usage error."""
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise CliError("the message is empty", Exit.USAGE)
    return text


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--tool``, ``--json``, ``--raw``: as ``cero chat`` takes them."""
    p.add_argument("--model", "-m", help="a model id from `cero models`")
    p.add_argument(
        "--tool", "-t", action="append", choices=TOOLS, default=[], help="a tool (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the events as NDJSON")
    p.add_argument("--raw", action="store_true", help=RAW_HELP)
    p.add_argument(
        "--detach-on-interrupt",
        "-d",
        action="store_true",
        help="Ctrl-C leaves the answer running on the server (follow it with `cero watch ID`) "
        f"instead of cancelling it; also ${DETACH_ENV}=1",
    )


def detach_on_interrupt(ctx: Context) -> bool:
    """``--detach-on-interrupt``, or ``CERO_DETACH_ON_INTERRUPT`` set to 1/true/yes/on."""
    if getattr(ctx.args, "detach_on_interrupt", False):
        return True
    return ctx.environ.get(DETACH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def generation_body(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    """The request body: ``fields``, the options, and a fresh ``clientMessageId``."""
    body: dict[str, Any] = {**fields, "clientMessageId": uuid.uuid4().hex}
    if args.model:
        body["aiModel"] = args.model
    if args.tool:
        body["tools"] = list(dict.fromkeys(args.tool))
    return body


async def stream_generation(
    ctx: Context, path: str, body: dict[str, Any], *, conversation_id: str | None = None
) -> int:
    """POST ``body`` to ``path`` and print the answer as it streams (``--json``: the
    events); the exit code, or the :class:`CliError` of an answer that failed. Ctrl-C
    cancels the answer (exit 130, the partial answer kept); a second one quits at once.
    With ``--detach-on-interrupt`` Ctrl-C leaves it running (exit 130)."""
    async with ctx.signed_in() as api:
        follower = await generate(
            ctx,
            api,
            path,
            body,
            json=bool(ctx.args.json),
            asked_model=ctx.args.model or None,
            conversation_id=conversation_id,
        )
    if follower.result is not None:
        raise follower.result
    return Exit.INTERRUPTED if follower.stopped else Exit.OK


async def generate(
    ctx: Context,
    api: Api,
    path: str,
    body: dict[str, Any],
    *,
    json: bool,
    asked_model: str | None,
    conversation_id: str | None,
) -> Follower:
    """Start one answer and follow it to its end; the :class:`Follower` tells how it
    ended (``result``: its error; ``stopped``: cancelled by Ctrl-C)."""
    out = ctx.out
    follower = Follower(
        api, out, "chat", json=json, asked_model=asked_model, conversation_id=conversation_id
    )
    cancels: list[asyncio.Task[None]] = []
    detach = detach_on_interrupt(ctx)
    detaching = False

    def first(_: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return api.stream("POST", path, json=body)

    def again(cursor: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        if cursor and follower.conversation_id:
            events = f"/api/conversations/{follower.conversation_id}/events"
            return api.stream("GET", events, last_event_id=cursor)
        # Nothing seen yet: the same clientMessageId gets the same turn back, never a
        # second one; events already shown are skipped by their seq.
        return api.stream("POST", path, json=body)

    def send_cancel() -> None:
        if follower.generation_id and follower.conversation_id and not cancels:
            cancels.append(asyncio.create_task(_cancel(ctx, api, follower)))

    async def connected(resp: aiohttp.ClientResponse, again: bool) -> None:
        follower.conversation_id = resp.headers.get("X-Conversation-Id") or (
            follower.conversation_id
        )
        follower.generation_id = resp.headers.get("X-Generation-Id") or (follower.generation_id)
        if follower.cancel_requested:
            send_cancel()  # Ctrl-C came before the answer had an id
        if detaching and follower.conversation_id and presses.task is not None:
            presses.task.cancel()  # Ctrl-C came before the server named the conversation
            return
        if not again and not json:
            if conversation_id is None:  # a new conversation: say which
                out.tty_note(f"(conversation {follower.conversation_id})")
            out.start_spinner("waiting for the answer")

    def first_press() -> None:
        nonlocal detaching
        if detach:
            detaching = True
            out.stop_spinner()
            if follower.conversation_id and presses.task is not None:
                presses.task.cancel()  # turned into `detached` below
            else:  # the server has not answered yet: as soon as it names the conversation
                out.note("(detaching once the server has the message; Ctrl-C again quits)")
            return
        follower.cancel_requested = True
        out.stop_spinner()
        if out.err_tty and not out.at_line_start:
            out.err.write("\n")  # not after the answer's last word on the terminal
        out.note("(stopping the answer; the text so far is kept. Ctrl-C again quits now)")
        send_cancel()

    presses = Presses(first_press)
    if not json:
        out.start_spinner("sending")
    try:
        with ctx.ctrl_c.handling(presses):
            await follow(follower, first, again, on_connect=connected, max_failures=1)
    except asyncio.CancelledError:
        detach_now = detaching and follower.conversation_id is not None
        if presses.count < 2 and not detach_now:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        out.end_line()
        if detach_now and follower.conversation_id is not None:
            raise detached(follower.conversation_id) from None
        where = follower.conversation_id or "ID"
        if cancels:
            text = f"interrupted; the answer was asked to stop (cero messages {where})"
        else:
            text = f"interrupted; the answer may go on: cero cancel {where}"
        raise Interrupted(text) from None
    finally:
        out.stop_spinner()
        for task in cancels:
            task.cancel()
    if follower.stopped and not json:
        out.end_line()
        kept = f"cero messages {follower.conversation_id}"
        out.note(f"(answer cancelled; the partial answer is kept: {kept})")
    return follower


async def _cancel(ctx: Context, api: Api, follower: Follower) -> None:
    """``POST …/cancel`` for the answer streaming; its ``cancelled`` event ends the stream."""
    path = f"/api/conversations/{follower.conversation_id}/cancel"
    try:
        answer = await api.request("POST", path, json={"generationId": follower.generation_id})
    except CliError as exc:
        ctx.out.note(f"(could not stop the answer: {exc.message})")
        return
    if not (isinstance(answer, dict) and answer.get("cancelled")):
        ctx.out.note("(the answer had already ended)")
