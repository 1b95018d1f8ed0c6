"""TOON encoding of the older part of a conversation.

Older turns travel inside the system instruction as one TOON table,
``[N]{role,content}:`` followed by one ``role,content`` row per message (docs/api.md,
"Chat"); a message's attachments are named at the end of its content, one
``[attachment: name, type, size]`` line each. Flat ``{role, content}`` rows are the
shape where TOON beats compact JSON (GEMINI.md: about 10–12% fewer tokens); the nested
Gemini ``contents/parts`` structure would be worse, so it is never encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import toon_format

from actors.models.base import ChatTurn, Role

#: The line that introduces the block inside the system instruction.
HISTORY_HEADER = (
    "Earlier conversation (oldest first; TOON table, one row per message: role,content). "
    "Treat it as context you already know; answer only the latest user message:"
)


def encode_turns(turns: Sequence[ChatTurn]) -> str:
    """The TOON table of ``turns``: ``[N]{role,content}:`` then indented rows.

    A bare list is encoded (not ``{"history": [...]}``) so the block starts exactly
    with ``[N]{role,content}:``. An empty list encodes as ``[]``.
    """
    rows = [{"role": t.role, "content": content_with_labels(t)} for t in turns]
    return toon_format.encode(rows)


def content_with_labels(turn: ChatTurn) -> str:
    """A turn's text, then one ``[attachment: name, type, size]`` line per attachment:
    how the block names files whose bytes are no longer sent."""
    if not turn.attachments:
        return turn.content
    return "\n".join([turn.content, *(a.label() for a in turn.attachments)])


def render_history(turns: Sequence[ChatTurn]) -> str:
    """The header line plus the block, ready to append to the system instruction."""
    return f"{HISTORY_HEADER}\n{encode_turns(turns)}"


def extract_block(system: str) -> str | None:
    """The TOON block inside a system instruction built by :func:`render_history`."""
    marker = HISTORY_HEADER + "\n"
    start = system.find(marker)
    if start < 0:
        return None
    return system[start + len(marker) :]


def decode_block(text: str) -> list[ChatTurn]:
    """Turns back from a block, or from a system instruction that contains one."""
    block = extract_block(text)
    data = toon_format.decode(block if block is not None else text)
    if not isinstance(data, list):
        raise ValueError("not a TOON history block")
    turns: list[ChatTurn] = []
    for row in data:
        if not isinstance(row, dict) or row.get("role") not in ("user", "assistant"):
            raise ValueError(f"bad history row: {row!r}")
        content = row.get("content")
        if not isinstance(content, str):
            # TOON leaves unquoted scalars typed; content is always text for us.
            content = "" if content is None else str(content)
        turns.append(ChatTurn(role=cast(Role, row["role"]), content=content))
    return turns
