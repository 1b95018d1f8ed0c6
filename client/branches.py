"""``cero`` commands for a conversation's branches (``docs/api.md``, "Branches").

``regenerate``, ``edit`` and ``continue`` start a generation on a message and stream it
like ``cero chat``; ``branches`` draws the whole tree; ``switch`` moves the active branch.
A MESSAGE_ID may be the short id ``cero branches`` shows (any unique prefix): it is
resolved against the conversation's tree first.
"""

from __future__ import annotations

from typing import Any

from client.api import Api
from client.context import AddCommand, Context
from client.errors import CliError, Exit
from client.generate import (
    add_generation_options,
    generation_body,
    message_text,
    stream_generation,
)
from client.tree import draw_tree, path_lines, short_id


def _base(conversation: str) -> str:
    return f"/api/conversations/{conversation}"


async def _get(api: Api, conversation: str, what: str) -> dict[str, Any]:
    answer = await api.request("GET", f"{_base(conversation)}/{what}")
    if not isinstance(answer, dict):
        raise CliError(f"the server's {what} of {conversation} is not a JSON object")
    return answer


def _messages(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in answer.get("messages") or [] if isinstance(m, dict)]


def match_id(messages: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The message whose id is ``wanted``, else the one whose id starts with it."""
    for m in messages:
        if m.get("id") == wanted:
            return m
    found = [m for m in messages if str(m.get("id", "")).startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CliError(f"no message {wanted!r} in this conversation (see `cero branches`)")
    ids = ", ".join(short_id(str(m.get("id"))) for m in found[:5])
    more = ", …" if len(found) > 5 else ""
    raise CliError(f"{wanted!r} is the start of several message ids ({ids}{more}); give more of it")


async def resolve(api: Api, conversation: str, wanted: str) -> dict[str, Any]:
    """The message MESSAGE_ID names (a whole id or a unique prefix), from the tree."""
    return match_id(_messages(await _get(api, conversation, "tree")), wanted)


# -- commands ------------------------------------------------------------------------------


async def cmd_regenerate(ctx: Context) -> int:
    conversation, wanted = ctx.args.conversation_id, ctx.args.message_id
    async with ctx.signed_in() as api:
        if wanted is not None:
            target = await resolve(api, conversation, wanted)
        else:
            path = _messages(await _get(api, conversation, "messages"))
            users = [m for m in path if m.get("role") == "user"]
            if not users:
                raise CliError("this conversation has no message to answer again")
            target = users[-1]
    url = f"{_base(conversation)}/messages/{target['id']}/regenerate"
    body = generation_body(ctx.args)
    return await stream_generation(ctx, url, body, conversation_id=conversation)


async def cmd_edit(ctx: Context) -> int:
    conversation = ctx.args.conversation_id
    text = message_text(ctx.args.text)
    async with ctx.signed_in() as api:
        target = await resolve(api, conversation, ctx.args.message_id)
    if target.get("role") != "user":
        raise CliError(
            f"{short_id(str(target['id']))} is an answer: edit takes one of your messages "
            "(`cero regenerate` answers again)"
        )
    url = f"{_base(conversation)}/messages/{target['id']}/edit"
    body = generation_body(ctx.args, message=text)
    return await stream_generation(ctx, url, body, conversation_id=conversation)


async def cmd_continue(ctx: Context) -> int:
    conversation, wanted = ctx.args.conversation_id, ctx.args.message_id
    async with ctx.signed_in() as api:
        if wanted is not None:
            target = await resolve(api, conversation, wanted)
        else:
            answer = await _get(api, conversation, "messages")
            leaf = answer.get("activeLeafId")
            path = _messages(answer)
            found = [m for m in path if m.get("id") == leaf] or path[-1:]
            if not found:
                raise CliError("this conversation has no answer to continue")
            target = found[0]
    url = f"{_base(conversation)}/messages/{target['id']}/continue"
    body = generation_body(ctx.args)
    try:
        return await stream_generation(ctx, url, body, conversation_id=conversation)
    except CliError as exc:
        if exc.reason != "not_continuable":
            raise
        raise CliError(
            f"{short_id(str(target['id']))} cannot be continued (not_continuable): only an "
            "answer cut off (MAX_TOKENS), cancelled or interrupted, with nothing after it, can"
        ) from None


async def cmd_branches(ctx: Context) -> int:
    async with ctx.signed_in() as api:
        tree = await _get(api, ctx.args.conversation_id, "tree")
    if ctx.args.json:
        ctx.out.json(tree)
        return Exit.OK
    for line in draw_tree(tree):
        ctx.out.text(line + "\n")
    return Exit.OK


async def cmd_switch(ctx: Context) -> int:
    conversation = ctx.args.conversation_id
    async with ctx.signed_in() as api:
        target = await resolve(api, conversation, ctx.args.message_id)
        answer = await api.request(
            "POST", f"{_base(conversation)}/messages/{target['id']}/switch", json={}
        )
        if ctx.args.json:
            ctx.out.json(answer)
            return Exit.OK
        path = _messages(await _get(api, conversation, "messages"))
    for line in path_lines(path):
        ctx.out.text(line + "\n")
    return Exit.OK


# -- arguments -----------------------------------------------------------------------------


def add_commands(add: AddCommand) -> None:
    """Register ``regenerate``, ``edit``, ``continue``, ``branches`` and ``switch``."""
    message_help = "a message id, or its start as `cero branches` shows it"
    p = add("regenerate", cmd_regenerate, "Answer a message again (a new branch) and stream it.")
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument(
        "message_id",
        metavar="MESSAGE_ID",
        nargs="?",
        help=f"{message_help} (default: your last message on the active branch)",
    )
    add_generation_options(p)
    p = add("edit", cmd_edit, "Edit your message (a new branch) and stream the answer.")
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument("message_id", metavar="MESSAGE_ID", help=message_help)
    p.add_argument("text", metavar="TEXT", help="the new text; - reads it from stdin")
    add_generation_options(p)
    p = add("continue", cmd_continue, "Continue an answer that was cut off, and stream it.")
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument(
        "message_id",
        metavar="MESSAGE_ID",
        nargs="?",
        help=f"{message_help} (default: the last message of the active branch)",
    )
    add_generation_options(p)
    p = add("branches", cmd_branches, "Draw a conversation's tree (* marks the active branch).")
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p = add("switch", cmd_switch, "Make a message part of the active branch.")
    p.add_argument("conversation_id", metavar="CONVERSATION_ID")
    p.add_argument("message_id", metavar="MESSAGE_ID", help=message_help)
    p.add_argument("--json", action="store_true", help="print the server's JSON")
