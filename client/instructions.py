"""``cero instructions``: the text the model gets with every answer (``docs/api.md``,
"Instructions").

Without ``--conversation`` it is the user's own ("about me / how to answer", every
conversation: ``GET``/``PUT /api/user/instructions``); with it, one conversation's (read
from ``GET …/messages``, set with ``PATCH /api/conversations/{id}``). ``--set TEXT``
replaces the text (``-`` reads it from stdin), ``--clear`` removes it, neither shows it.
"""

from __future__ import annotations

import sys
from typing import Any

from client.api import Api
from client.context import AddCommand, Context
from client.errors import CliError, Exit

USER_PATH = "/api/user/instructions"


def _text(value: str) -> str:
    """``--set``'s argument: ``-`` reads stdin; blank is a usage error (``--clear`` clears)."""
    if value == "-":
        value = sys.stdin.read()
    if not value.strip():
        raise CliError("the instructions are empty (use --clear to remove them)", Exit.USAGE)
    return value


async def _conversation(api: Api, conversation: str) -> dict[str, Any]:
    answer = await api.request("GET", f"/api/conversations/{conversation}/messages")
    found = answer.get("conversation") if isinstance(answer, dict) else None
    if not isinstance(found, dict):
        raise CliError(f"the server's answer for {conversation} has no conversation")
    return found


async def _change(ctx: Context, api: Api, value: str | None) -> str | None:
    """Store ``value`` (``None``: clear) where the arguments say; what the server kept."""
    conversation: str | None = ctx.args.conversation
    if conversation is None:
        answer = await api.request("PUT", USER_PATH, json={"instructions": value})
        kept = answer.get("instructions") if isinstance(answer, dict) else None
    else:
        answer = await api.request(
            "PATCH", f"/api/conversations/{conversation}", json={"instructions": value}
        )
        found = answer.get("conversation") if isinstance(answer, dict) else None
        kept = found.get("instructions") if isinstance(found, dict) else None
    if ctx.args.json:
        ctx.out.json(answer)
    return kept if isinstance(kept, str) else None


async def cmd_instructions(ctx: Context) -> int:
    conversation: str | None = ctx.args.conversation
    where = "this conversation" if conversation else "all your conversations"
    async with ctx.signed_in() as api:
        if ctx.args.set is not None or ctx.args.clear:
            value = None if ctx.args.clear else _text(ctx.args.set)
            kept = await _change(ctx, api, value)
            if not ctx.args.json:
                ctx.out.note(
                    f"Instructions for {where} saved ({len(kept)} characters)."
                    if kept
                    else f"Instructions for {where} cleared."
                )
            return Exit.OK
        if conversation is None:
            answer = await api.request("GET", USER_PATH)
            text = answer.get("instructions") if isinstance(answer, dict) else None
        else:
            answer = {"instructions": (await _conversation(api, conversation)).get("instructions")}
            text = answer["instructions"]
    if ctx.args.json:
        ctx.out.json(answer)
    elif isinstance(text, str) and text:
        ctx.out.text(text + "\n")
    else:
        ctx.out.note(f"No instructions for {where}; set some with --set TEXT.")
    return Exit.OK


def add_commands(add: AddCommand) -> None:
    """Register ``instructions``."""
    p = add(
        "instructions",
        cmd_instructions,
        "Show or set what the model is told with every answer (about you, how to answer).",
    )
    p.add_argument(
        "--conversation",
        "-c",
        metavar="ID",
        help="this conversation's own instructions (default: yours, for every conversation)",
    )
    change = p.add_mutually_exclusive_group()
    change.add_argument("--set", metavar="TEXT", help="replace them; - reads them from stdin")
    change.add_argument("--clear", action="store_true", help="remove them")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
