"""A conversation as a tree of messages, and its active path.

Every message names its parent (``None`` for a first message); the conversation names one
active leaf. The active path (root → leaf) is what the model sees and what
``GET …/messages`` shows; branches are made by edit and regenerate and chosen by a switch
(docs/api.md, Branches). Pure: the actor keeps one per conversation as its context cache,
the routes build one from the stored rows.

Rows stored before branches existed have parents filled in by the migration (each message's
parent is the one before it), so an old conversation is one straight path. A leaf that is
not recorded (or names a message that is gone) stands for the newest message.
"""

from __future__ import annotations

from collections.abc import Iterable

from actors.store import StoredMessage


class ConversationTree:
    def __init__(self, messages: Iterable[StoredMessage], leaf: str | None = None) -> None:
        self._messages: dict[str, StoredMessage] = {}
        self._children: dict[str | None, list[str]] = {}
        for message in messages:
            self.add(message, activate=False)
        self.leaf = leaf if leaf in self._messages else self._newest()

    def _newest(self) -> str | None:
        return next(reversed(self._messages), None)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, message_id: str) -> StoredMessage | None:
        return self._messages.get(message_id)

    def all(self) -> list[StoredMessage]:
        """Every message of every branch, in the order they were added (oldest first)."""
        return list(self._messages.values())

    def add(self, message: StoredMessage, *, activate: bool = True) -> None:
        """A new message (its parent already here, or ``None``); with ``activate`` it is
        the new active leaf."""
        if message.id not in self._messages:
            self._children.setdefault(message.parent_id, []).append(message.id)
        self._messages[message.id] = message
        if activate:
            self.leaf = message.id

    def children(self, message_id: str | None) -> list[str]:
        return list(self._children.get(message_id, ()))

    def is_leaf(self, message_id: str) -> bool:
        return not self._children.get(message_id)

    def path(self, leaf: str | None = None) -> list[StoredMessage]:
        """Root → ``leaf`` (default: the active leaf), inclusive."""
        current = self.leaf if leaf is None else leaf
        out: list[StoredMessage] = []
        seen: set[str] = set()
        while current is not None and current not in seen:
            message = self._messages.get(current)
            if message is None:
                break
            seen.add(current)
            out.append(message)
            current = message.parent_id
        out.reverse()
        return out

    def on_path(self, message_id: str) -> bool:
        return any(m.id == message_id for m in self.path())

    def descend(self, message_id: str) -> str:
        """The leaf reached from ``message_id`` by taking the newest child at each step."""
        current = message_id
        seen = {current}
        while True:
            children = self._children.get(current)
            if not children or children[-1] in seen:
                return current
            current = children[-1]
            seen.add(current)

    def siblings(self, message_id: str) -> list[str]:
        """The messages with the same parent and role as ``message_id``, oldest first,
        itself included."""
        message = self._messages[message_id]
        return [
            sid
            for sid in self._children.get(message.parent_id, ())
            if self._messages[sid].role == message.role
        ]

    def switch(self, message_id: str) -> str:
        """Make ``message_id`` part of the active path; return the new active leaf."""
        self.leaf = self.descend(message_id)
        return self.leaf
