"""``cero search TEXT``: full-text search over your messages and conversation titles
(``GET /api/search``; docs/api.md, "Search").

Each result is two lines: the conversation (id, title) with what matched (a message: its
id, who wrote it, ``off-branch`` when it is not on the active branch; or the title), then
the snippet, matched words in «…». ``--json`` prints one result a line, as the server sent
it. Pages are followed until ``--limit`` results are shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from client.context import AddCommand, Context
from client.errors import CliError, Exit

#: The server's largest page (docs/api.md, Search).
PAGE = 50


def result_lines(result: dict[str, Any]) -> list[str]:
    """A result as the terminal shows it (the caller filters the server's text)."""
    where = f"{result.get('conversationId')}  {result.get('conversationTitle', '')}"
    when = str(result.get("createdAt", ""))[:16]
    if result.get("kind") == "title" or result.get("messageId") is None:
        what = "title"
    else:
        who = "you" if result.get("role") == "user" else "assistant"
        what = f"message {result.get('messageId')} ({who})"
        if result.get("onActivePath") is False:
            what += " off-branch"
    snippet = " ".join(str(result.get("snippet", "")).split())
    return [f"{where}  ·  {what}  ·  {when}", f"    {snippet}"]


async def cmd_search(ctx: Context) -> int:
    text = " ".join(ctx.args.text).strip()
    if not text:
        raise CliError("give some words to search for", Exit.USAGE)
    shown = 0
    cursor: str | None = None
    async with ctx.signed_in() as api:
        while shown < ctx.args.limit:
            params = {"q": text, "limit": str(min(PAGE, ctx.args.limit - shown))}
            if cursor:
                params["cursor"] = cursor
            page = await api.request("GET", "/api/search", params=params)
            if not isinstance(page, dict):
                raise CliError("the server's search answer is not a JSON object")
            for result in page.get("results") or []:
                if not isinstance(result, dict):
                    continue
                shown += 1
                if ctx.args.json:
                    ctx.out.json(result)
                else:
                    for line in result_lines(result):
                        ctx.out.text(line + "\n")
            cursor = page.get("nextCursor")
            if not cursor:
                break
    if shown == 0 and not ctx.args.json:
        ctx.out.note(f"Nothing found for {text!r}.")
    return Exit.OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_commands(add: AddCommand) -> None:
    """Register ``search``."""
    p = add("search", cmd_search, "Search your messages and conversation titles.")
    p.add_argument("text", metavar="TEXT", nargs="+", help="the words to find (plain words)")
    p.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="how many results (default 20)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object a line")
