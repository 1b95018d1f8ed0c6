"""What ``cero chat -i`` shows of live events (:class:`client.repl_screen.Screen`), fed
events as the server sends them, on a terminal's stderr: presence only when another device
watches and only when that changes (never inside an answer's line), the session's own
viewers not counted (over HTTP a POST's open answer is one), a rename and a deletion of
the conversation, another device's turn."""

from __future__ import annotations

import io
from typing import Any

import pytest

from client.output import Output
from client.repl_screen import Screen, Turn

pytestmark = pytest.mark.asyncio

C = "conv1"


class TtyText(io.StringIO):
    def isatty(self) -> bool:
        return True


class Seen:
    def __init__(self, *, posts_are_viewers: bool = False) -> None:
        self.out = io.BytesIO()
        self.err = TtyText()
        self.idle = 0
        self.screen = Screen(
            Output(self.out, self.err),
            json=False,
            conversation=C,
            posts_are_viewers=posts_are_viewers,
            reread=self._reread,
            idle=self._idle,
            lost=lambda conversation, cursor: self.lost.append((conversation, cursor)),
        )
        self.lost: list[tuple[str, str | None]] = []
        self.seq = 0

    async def _reread(self, conversation: str) -> list[dict[str, Any]]:
        return []

    def _idle(self) -> None:
        self.idle += 1

    async def event(self, kind: str, **fields: Any) -> None:
        self.seq += 1
        base: dict[str, Any] = {"type": kind, "epoch": "e", "seq": self.seq}
        if kind.startswith(("conversation.", "answer.")):
            base["channel"] = "account"
        else:
            base["conversationId"] = C
        await self.screen.show({**base, **fields})

    def notes(self) -> list[str]:
        return [line for line in self.err.getvalue().splitlines() if line.startswith("(")]


async def test_presence_only_when_another_device_watches_and_it_changes() -> None:
    seen = Seen()
    for viewers in (1, 2, 2, 3, 1, 1):
        await seen.event("presence", viewers=viewers)
    assert seen.notes() == [
        "(another device is watching)",
        "(2 other devices are watching)",
        "(no other device is watching)",
    ]


async def test_over_http_the_sends_own_answer_is_not_another_device() -> None:
    seen = Seen(posts_are_viewers=True)  # the events stream, and a POST's open answer
    await seen.event("presence", viewers=1)
    turn = Turn("mine")
    seen.screen.begin(turn)
    await seen.event("presence", viewers=2)  # the POST's answer subscribed
    message = {"id": "u1", "role": "user", "content": "typed", "clientMessageId": "mine"}
    await seen.event("message", message=message)
    await seen.event("init", messageId="a1", userMessageId="u1", generationId="g1")
    await seen.event("presence", viewers=3)  # someone else came
    await seen.event("done", messageId="a1", generationId="g1", fullText="ok")
    seen.screen.finish()
    await seen.event("presence", viewers=2)  # the POST's answer closed
    assert seen.notes() == ["(another device is watching)"]
    await seen.event("presence", viewers=1)
    assert seen.notes()[1:] == ["(no other device is watching)"]


async def test_presence_waits_for_the_end_of_the_answers_line() -> None:
    seen = Seen()
    await seen.event("init", messageId="a1", userMessageId="u1", generationId="g1")
    await seen.event("token", messageId="a1", text="half an ")
    await seen.event("presence", viewers=2)
    assert seen.notes() == []
    await seen.event("token", messageId="a1", text="answer")
    await seen.event("done", messageId="a1", generationId="g1", fullText="half an answer")
    assert seen.notes() == ["(another device is watching)"]
    assert seen.out.getvalue() == b"half an answer\n"


async def test_another_devices_turn_prints_its_message_and_answer() -> None:
    seen = Seen()
    seen.screen.at_prompt = True
    message = {"id": "u1", "role": "user", "content": "two\nlines", "clientMessageId": "x"}
    await seen.event("message", message=message)
    await seen.event("init", messageId="a1", userMessageId="u1", generationId="g1")
    await seen.event("token", messageId="a1", text="An")
    await seen.event("done", messageId="a1", generationId="g1", fullText="Answer")
    assert seen.out.getvalue() == b"> two\n> lines\nAnswer\n"
    assert seen.idle == 1  # the prompt is shown again


async def test_the_sessions_own_turn_is_not_echoed_and_ends_on_its_generation() -> None:
    seen = Seen()
    turn = Turn("mine", asked_model="pro")
    seen.screen.begin(turn)
    message = {"id": "u1", "role": "user", "content": "typed", "clientMessageId": "mine"}
    await seen.event("message", message=message)
    await seen.event("init", messageId="a1", userMessageId="u1", generationId="g1", aiModel="demo")
    assert turn.generation_id == "g1" and not turn.ended.is_set()
    await seen.event("cancelled", messageId="a1", generationId="g1")
    assert turn.ended.is_set() and turn.result is not None  # not asked for: an error
    assert seen.out.getvalue() == b""
    assert "(pro is answered by demo)" in seen.notes()


async def test_renamed_and_deleted_elsewhere() -> None:
    seen = Seen()
    await seen.event("conversation.renamed", conversationId="other", conversation={})
    await seen.event("conversation.renamed", conversationId=C, conversation={"shortTitle": "Trees"})
    await seen.event("conversation.deleted", conversationId=C)
    assert seen.notes() == [
        "(this conversation is titled “Trees”)",
        f"(conversation {C} was deleted; your next message starts a new conversation)",
    ]
    assert seen.screen.conversation is None


async def test_a_subscription_ended_by_the_server_is_followed_again_from_its_cursor() -> None:
    seen = Seen()
    await seen.event("presence", viewers=1)
    await seen.screen.show({"type": "unsubscribed", "conversationId": C, "reason": "closed"})
    assert seen.lost == [(C, "e:1")]
    assert seen.screen.conversation == C  # until following it again says it is gone
    seen.screen.gone(C)
    seen.screen.gone(C)
    assert seen.notes() == [
        f"(conversation {C} was deleted; your next message starts a new conversation)"
    ]
