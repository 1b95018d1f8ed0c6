"""Drawing a conversation's branches as text (no I/O: the commands print the lines).

A message with alternatives (``siblingCount`` > 1) gets a ``‹i/n›`` marker. The tree of
``GET …/tree`` is drawn one line per message: a straight run of messages stays in one
column, and only a message with several children opens a level, with ``├─``/``└─``
connectors, so a long conversation without branches does not drift to the right. The
lines of the active path are marked ``*`` in the first column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SHORT_ID = 8
SNIPPET = 60

Message = Mapping[str, Any]


def sibling_marker(message: Message) -> str:
    """``‹2/3›`` for the second of three alternatives; ``""`` for a message without any."""
    count, index = message.get("siblingCount"), message.get("siblingIndex")
    if not isinstance(count, int) or not isinstance(index, int) or count < 2:
        return ""
    return f"‹{index + 1}/{count}›"


def short_id(message_id: str) -> str:
    return message_id[:SHORT_ID]


def snippet(text: str, width: int = SNIPPET) -> str:
    """The text on one line (whitespace collapsed), cut to ``width`` characters with ``…``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def who(message: Message) -> str:
    """``you`` for the user, else the model that answered (as ``cero messages`` says it)."""
    if message.get("role") == "user":
        return "you"
    return str(message.get("aiModel") or "assistant")


def summary(message: Message) -> str:
    """``<short id>  <who> ‹i/n› (status)  <snippet>``: one message on one line."""
    head = f"{short_id(str(message.get('id', '')))}  {who(message)}"
    marker = sibling_marker(message)
    if marker:
        head += f" {marker}"
    status = message.get("status")
    if status and status != "complete":
        head += f" ({status})"
    return f"{head}  {snippet(str(message.get('content', '')))}"


def active_path(messages: Iterable[Message], leaf: str | None) -> set[str]:
    """The ids from the root to ``leaf``, following ``parentId``."""
    by_id = {str(m.get("id")): m for m in messages}
    path: set[str] = set()
    current = leaf
    while current is not None and current in by_id and current not in path:
        path.add(current)
        parent = by_id[current].get("parentId")
        current = parent if isinstance(parent, str) else None
    return path


def draw_tree(tree: Mapping[str, Any]) -> list[str]:
    """The lines of ``cero branches`` for the JSON of ``GET …/tree``."""
    messages: Sequence[Message] = [m for m in tree.get("messages") or [] if isinstance(m, Mapping)]
    ids = {str(m.get("id")) for m in messages}
    children: dict[str | None, list[Message]] = {}
    for m in messages:  # oldest first, so each list is too
        parent = m.get("parentId")
        key = parent if isinstance(parent, str) and parent in ids else None
        children.setdefault(key, []).append(m)
    leaf = tree.get("activeLeafId")
    on_path = active_path(messages, leaf if isinstance(leaf, str) else None)
    lines: list[str] = []

    def line(m: Message, prefix: str) -> None:
        mark = "*" if str(m.get("id")) in on_path else " "
        lines.append(f"{mark} {prefix}{summary(m)}")

    def run(siblings: list[Message], indent: str) -> None:
        """Draw ``siblings`` (the children of one message) and everything below them."""
        if len(siblings) == 1:
            chain(siblings[0], indent, indent)
            return
        for n, m in enumerate(siblings):
            last = n == len(siblings) - 1
            chain(m, indent + ("└─ " if last else "├─ "), indent + ("   " if last else "│  "))

    def chain(m: Message, first: str, rest: str) -> None:
        """``m`` (its line prefixed ``first``) and its descendants, in one column (``rest``)
        while each has one child, then the children of the next message with several."""
        line(m, first)
        below = children.get(str(m.get("id")), [])
        while len(below) == 1:
            line(below[0], rest)
            below = children.get(str(below[0].get("id")), [])
        if below:
            run(below, rest)

    run(children.get(None, []), "")
    return lines


def path_lines(messages: Iterable[Message]) -> list[str]:
    """The active path (``GET …/messages``), one :func:`summary` line per message."""
    return [summary(m) for m in messages]
