"""Newline-delimited JSON, the ``{"topic", "data"}`` lines the existing Cero CLI parses."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from actors.api import Event
from server.transports.wire import chunk

#: The fields of each event kind that an NDJSON line carries, in the seed's order.
_FIELDS: dict[str, tuple[str, ...]] = {
    "init": ("messageId", "userMessageId", "generationId", "aiModel"),
    "tool": ("tool", "payload"),
    "done": ("fullText", "messageId", "finishReason", "usage", "citations"),
    "error": ("error", "code"),
}


def _pick(data: Mapping[str, object], kind: str) -> dict[str, object]:
    return {name: data.get(name) for name in _FIELDS[kind]}


class NdjsonRenderer:
    """Renders one chat response; remembers the answer so ``cancelled`` can carry it."""

    def __init__(self, conversation_id: str, chunked: bool) -> None:
        self.conversation_id = conversation_id
        self.chunked = chunked
        self.parts: list[str] = []

    def line(self, topic: str, data: object) -> bytes:
        raw = orjson.dumps({"topic": topic, "data": data}) + b"\n"
        return chunk(raw) if self.chunked else raw

    def __call__(self, event: Event) -> bytes | None:
        kind = event.type
        if kind == "token":
            self.parts.append(event.text)
            key = "nd.c" if self.chunked else "nd"
            frame = event.frames.get(key)
            if frame is None:
                frame = self.line("token", event.text)
                event.frames[key] = frame
            return frame
        return self.render(kind, event.data)

    def render(self, kind: str, data: dict[str, object]) -> bytes | None:
        if kind == "init":
            init = {"conversationId": self.conversation_id, **_pick(data, kind)}
            action = data.get("action")
            if action is not None and action != "send":
                init["action"] = action  # a branch operation (docs/api.md, Branches)
            return self.line("init", init)
        if kind in _FIELDS:
            return self.line(kind, _pick(data, kind))
        if kind == "cancelled":
            full = data.get("fullText")
            text = full if isinstance(full, str) else "".join(self.parts)
            return self.line("cancelled", {"fullText": text, "messageId": data.get("messageId")})
        return None  # message, presence, reset: not part of the CLI's protocol
