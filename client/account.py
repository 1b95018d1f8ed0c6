"""``cero watch --account``: the account channel (``GET /api/account/events``; docs/api.md,
"Account channel") as one readable line per event.

Conversations created, renamed and deleted, answers started and ended, sessions revoked,
from every device. A dropped stream is resumed with the last cursor (``Last-Event-ID``) by
:func:`client.follow.follow`; events already printed are skipped by their ``seq``; a
``reset`` (the cursor could not be replayed) is a note on stderr: some events were missed,
``cero conversations`` shows where things stand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from client.api import Api
from client.errors import CliError, Exit
from client.output import Output
from client.sse import ServerSentEvent

PATH = "/api/account/events"


def _title(data: dict[str, Any]) -> str:
    conversation = data.get("conversation")
    title = conversation.get("shortTitle") if isinstance(conversation, dict) else None
    return f"  “{title}”" if isinstance(title, str) and title else ""


def event_line(data: dict[str, Any]) -> str | None:
    """One account event as a line (without its newline); ``None`` for none to show."""
    kind = str(data.get("type"))
    cid = str(data.get("conversationId", ""))
    match kind:
        case "conversation.created":
            return f"created  {cid}{_title(data)}"
        case "conversation.renamed":
            return f"renamed  {cid}{_title(data)}"
        case "conversation.deleted":
            return f"deleted  {cid}"
        case "answer.started":
            return f"answer started  {cid}{_title(data)}"
        case "answer.ended":
            return f"answer ended  {cid}{_title(data)}  {data.get('status')}"
        case "session.revoked":
            return f"session revoked  {data.get('sessionId')}"
        case "reset":
            return None
    return f"{kind}  {cid}".rstrip()  # an event type newer than this client


@dataclass
class AccountFollower:
    """Prints the account channel's events; never done by itself (Ctrl-C ends it)."""

    api: Api
    out: Output
    json: bool = False
    epoch: str | None = None
    seq: int = 0

    async def handle(self, sse: ServerSentEvent) -> bool:
        try:
            data = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(data, dict):
            return False
        kind = data.get("type") or sse.event
        epoch, seq = data.get("epoch"), data.get("seq")
        if isinstance(epoch, str) and isinstance(seq, int):
            if kind != "reset" and epoch == self.epoch and seq <= self.seq:
                return False  # printed before the reconnect
            self.epoch, self.seq = epoch, seq
        if self.json:
            self.out.verbatim(sse.data + "\n")
            return False
        if kind == "reset":
            self.out.note(
                "(missed account events while disconnected; `cero conversations` shows "
                "where things stand)"
            )
            return False
        line = event_line(data)
        if line is not None:
            self.out.text(line + "\n")
        return False

    def gave_up(self, reason: str) -> CliError:
        return CliError(
            f"lost the connection to {self.api.server} ({reason}); follow it again: "
            "cero watch --account",
            Exit.UNREACHABLE,
        )
