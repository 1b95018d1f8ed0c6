"""Branches as a state machine (hypothesis): any sequence of sends, regenerates, edits and
switches on a real :class:`ConversationActor` (in-memory store, the demo model) against a
plain model of the tree. After every step the stored active path is the model's, every
answer's stored text is what a watcher received for it, token by token, and each answer
is the demo model's reply to exactly the path it was asked on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.conversation import ActorDeps, ConversationActor
from actors.flusher import Flusher
from actors.mailbox import Action
from actors.models.base import ChatTurn, ModelRequest
from actors.models.demo import DemoProvider, demo_answer
from actors.tree import ConversationTree
from tests.memory_store import MemoryStore, Watcher, simple_request

USER = "user-1"


@dataclass(frozen=True)
class DemoModel:
    id: str = "demo"
    provider: str = "demo"


@dataclass
class Node:
    id: str
    parent: str | None
    role: str
    content: str
    children: list[str] = field(default_factory=list)


class Branches(RuleBasedStateMachine):
    """The model: nodes with parents and children (oldest first), and the active leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.nodes: dict[str, Node] = {}
        self.roots: list[str] = []
        self.leaf: str | None = None

    # -- the model's own rules ------------------------------------------------------------

    def path(self, leaf: str | None = None) -> list[Node]:
        out: list[Node] = []
        current = self.leaf if leaf is None else leaf
        while current is not None:
            node = self.nodes[current]
            out.append(node)
            current = node.parent
        return out[::-1]

    def add(self, node: Node) -> None:
        self.nodes[node.id] = node
        if node.parent is None:
            self.roots.append(node.id)
        else:
            self.nodes[node.parent].children.append(node.id)

    def expected(self, context: list[Node], user_text: str) -> str:
        turns = [ChatTurn(role=n.role, content=n.content) for n in context]  # type: ignore[arg-type]
        turns.append(ChatTurn(role="user", content=user_text))
        return demo_answer(ModelRequest(model="demo", system="", contents=tuple(turns)))

    # -- running the actor ------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    @initialize()
    def start(self) -> None:
        async def make() -> None:
            self.store = MemoryStore()
            self.flusher = Flusher(self.store, 3600.0)
            deps = ActorDeps(
                store=self.store,
                providers={"demo": DemoProvider(token_delay=0)},
                build_request=simple_request,
                flusher=self.flusher,
            )
            self.cid = self.store.create_conversation(USER)
            self.actor = ConversationActor(self.cid, USER, deps)
            self.watch = Watcher()
            self.watch.attach(await self.actor.subscribe(None, self.watch.spec()))

        self.run(make())

    def teardown(self) -> None:
        async def stop() -> None:
            await self.actor.stop()
            await self.flusher.stop()

        if hasattr(self, "actor"):
            self.run(stop())
        self.loop.close()

    async def _turn(self, message: str, action: Action, target: str | None) -> tuple[str, str]:
        result = await self.actor.send(
            message,
            model=DemoModel(),
            action=action,
            target=target,
        )
        gid = result.generation_id
        await self.watch.until(
            lambda e: e.type in ("done", "error") and e.data.get("generationId") == gid
        )
        assert result.assistant_message_id is not None
        return result.user_message.id, result.assistant_message_id

    # -- the rules ------------------------------------------------------------------------

    @rule(text=st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8))
    def send(self, text: str) -> None:
        context = self.path()
        user, answer = self.run(self._turn(text, "send", None))
        self.add(Node(user, self.leaf, "user", text))
        self.add(Node(answer, user, "assistant", self.expected(context, text)))
        self.leaf = answer

    @rule(pick=st.integers(min_value=0))
    def regenerate(self, pick: int) -> None:
        users = [n for n in self.nodes.values() if n.role == "user"]
        if not users:
            return
        target = users[pick % len(users)]
        context = self.path(target.parent) if target.parent else []
        _, answer = self.run(self._turn("", "regenerate", target.id))
        self.add(Node(answer, target.id, "assistant", self.expected(context, target.content)))
        self.leaf = answer

    @rule(pick=st.integers(min_value=0), text=st.sampled_from(["edited", "again", "x y z"]))
    def edit(self, pick: int, text: str) -> None:
        users = [n for n in self.nodes.values() if n.role == "user"]
        if not users:
            return
        target = users[pick % len(users)]
        context = self.path(target.parent) if target.parent else []
        user, answer = self.run(self._turn(text, "edit", target.id))
        self.add(Node(user, target.parent, "user", text))
        self.add(Node(answer, user, "assistant", self.expected(context, text)))
        self.leaf = answer

    @rule(pick=st.integers(min_value=0))
    def switch(self, pick: int) -> None:
        if not self.nodes:
            return
        target = list(self.nodes.values())[pick % len(self.nodes)]
        leaf = self.run(self.actor.switch(target.id))
        current = target.id
        while self.nodes[current].children:
            current = self.nodes[current].children[-1]
        assert leaf == current
        self.leaf = current

    # -- what must hold ---------------------------------------------------------------------

    @invariant()
    def the_stored_path_is_the_models(self) -> None:
        if not hasattr(self, "store"):
            return
        stored = ConversationTree(self.store.messages(self.cid), self.store.leaves.get(self.cid))
        assert [m.id for m in stored.path()] == [n.id for n in self.path()]

    @invariant()
    def every_answer_is_what_its_watchers_received(self) -> None:
        if not hasattr(self, "store"):
            return
        received: dict[str, str] = {}
        for event in self.watch.events:
            if event.type == "token":
                mid = str(event.data["messageId"])
                received[mid] = received.get(mid, "") + str(event.data["text"])
        for node in self.nodes.values():
            if node.role == "assistant":
                row = self.store.row(node.id)
                assert row.status == "complete"
                assert row.content == received[node.id] == node.content


TestBranches = Branches.TestCase
TestBranches.settings = settings(max_examples=80, stateful_step_count=14, deadline=None)
