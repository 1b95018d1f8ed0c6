"""``cero rename ID TITLE`` and ``cero delete ID`` (``PATCH`` / ``DELETE
/api/conversations/{id}``; docs/api.md, "Conversations").

``delete`` asks first (``Delete "<title>" (ID)? [y/N]`` on stderr, the answer read from
stdin) unless ``--yes``; without a terminal to ask on, ``--yes`` is required (a usage
error otherwise), so a script never hangs on a question or deletes by accident.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from client.context import AddCommand, Context
from client.errors import CliError, Exit
from client.terminal_text import clean


def _base(conversation: str) -> str:
    return f"/api/conversations/{conversation}"


async def cmd_rename(ctx: Context) -> int:
    title = " ".join(ctx.args.title).strip()
    if not title:
        raise CliError("the new title is empty", Exit.USAGE)
    async with ctx.signed_in() as api:
        answer = await api.request(
            "PATCH", _base(ctx.args.conversation_id), json={"shortTitle": title}
        )
    if ctx.args.json:
        ctx.out.json(answer)
        return Exit.OK
    conversation = answer.get("conversation", {}) if isinstance(answer, dict) else {}
    title = conversation.get("shortTitle", title)
    ctx.out.note(f"Renamed {ctx.args.conversation_id} to “{title}”.")
    return Exit.OK


def confirmed(question: str, stdin: TextIO, err: TextIO) -> bool:
    """Ask ``question`` on ``err``; ``True`` for an answer starting with y."""
    err.write(f"{clean(question)} [y/N] ")
    err.flush()
    answer = stdin.readline()
    if not answer.endswith("\n"):
        err.write("\n")
    return answer.strip().lower() in ("y", "yes")


async def cmd_delete(ctx: Context) -> int:
    conversation = ctx.args.conversation_id
    async with ctx.signed_in() as api:
        if not ctx.args.yes:
            if not sys.stdin.isatty():
                raise CliError(
                    "delete asks for confirmation, and stdin is not a terminal: add --yes",
                    Exit.USAGE,
                )
            found: Any = await api.request("GET", f"{_base(conversation)}/messages")
            about = found.get("conversation", {}) if isinstance(found, dict) else {}
            title = about.get("shortTitle") or "(untitled)"
            count = len(found.get("messages") or []) if isinstance(found, dict) else 0
            question = f"Delete “{title}” ({conversation}, {count} messages)?"
            if not confirmed(question, sys.stdin, ctx.out.err):
                ctx.out.note("Not deleted.")
                return Exit.FAILED
        await api.request("DELETE", _base(conversation))
    ctx.out.note(f"Deleted {conversation}.")
    return Exit.OK


def add_commands(add: AddCommand) -> None:
    """Register ``rename`` and ``delete``."""
    p = add("rename", cmd_rename, "Give a conversation a new title.")
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("title", metavar="TITLE", nargs="+", help="the new title (≤ 100 characters)")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p = add("delete", cmd_delete, "Delete a conversation and its messages (asks first).")
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (required when stdin is not a TTY)"
    )
