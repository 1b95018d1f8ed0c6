"""Starting a generation and streaming its answer to stdout.

``cero chat`` (``POST /api/chat``) and the branch operations ``regenerate``, ``edit`` and
``continue`` (``POST /api/conversations/{id}/messages/{messageId}/…``) all answer with the
same stream, so one function follows them: SSE, resumed after a drop from the last cursor
on ``GET …/events``, or — before the first event — by the same request again (its
``clientMessageId`` gets the same generation back, never a second one).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp

from client.context import Context
from client.errors import CliError, Exit
from client.follow import Follower, follow

TOOLS = ("google_search", "url_context", "code_execution")
RAW_HELP = "print the text with its control characters and escape sequences (not for a terminal)"
#: The commands that start a generation (Ctrl-C leaves it running on the server).
GENERATING = frozenset({"chat", "regenerate", "edit", "continue"})


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
    events); the exit code, or the :class:`CliError` of an answer that failed."""
    json = bool(ctx.args.json)
    async with ctx.signed_in() as api:
        follower = Follower(
            api,
            ctx.out,
            "chat",
            json=json,
            asked_model=ctx.args.model or None,
            conversation_id=conversation_id,
        )

        def first(_: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            return api.stream("POST", path, json=body)

        def again(cursor: str | None) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            if cursor and follower.conversation_id:
                events = f"/api/conversations/{follower.conversation_id}/events"
                return api.stream("GET", events, last_event_id=cursor)
            # Nothing seen yet: the same clientMessageId gets the same turn back, never a
            # second one; events already shown are skipped by their seq.
            return api.stream("POST", path, json=body)

        async def connected(resp: aiohttp.ClientResponse, again: bool) -> None:
            follower.conversation_id = resp.headers.get("X-Conversation-Id") or (
                follower.conversation_id
            )
            follower.generation_id = resp.headers.get("X-Generation-Id") or (follower.generation_id)
            if not again and not json:
                if conversation_id is None:  # a new conversation: say which
                    ctx.out.tty_note(f"(conversation {follower.conversation_id})")
                ctx.out.start_spinner("waiting for the answer")

        if not json:
            ctx.out.start_spinner("sending")
        try:
            await follow(follower, first, again, on_connect=connected, max_failures=5)
        finally:
            ctx.out.stop_spinner()
    if follower.result is not None:
        raise follower.result
    return Exit.OK
