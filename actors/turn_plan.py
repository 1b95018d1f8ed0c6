"""Where a send's turn goes in the conversation's tree (docs/api.md, Branches): pure.

:func:`plan_turn` reads the tree and the command's ``action``/``target`` and says what the
model sees before the new turn, where the new user message hangs, which user message a
regenerate answers and which answer a continue carries on; or refuses the target
(:class:`MessageNotFound`, :class:`InvalidTarget`, :class:`NotContinuable`).
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.mailbox import Action, InvalidTarget, MessageNotFound, NotContinuable
from actors.store import StoredMessage
from actors.tree import ConversationTree


@dataclass(slots=True)
class TurnPlan:
    """Where a send's turn goes in the tree."""

    #: The messages the model sees before the new turn (the active path up to it).
    context: list[StoredMessage]
    #: The new user message's parent (send, edit).
    parent_id: str | None = None
    #: Regenerate: the existing user message the new answer answers.
    answers: StoredMessage | None = None
    #: Continue: the answer that goes on, and the user message it answers.
    continued: StoredMessage | None = None
    user: StoredMessage | None = None


#: How an answer may have ended for a continue to carry it on.
_CONTINUABLE = frozenset({"cancelled", "interrupted"})


def plan_turn(tree: ConversationTree, action: Action, target: str | None, message: str) -> TurnPlan:
    """Where ``action`` puts the turn; raises :class:`MessageNotFound`,
    :class:`InvalidTarget` or :class:`NotContinuable` for a target it cannot use."""
    if action == "send":
        return TurnPlan(tree.path(), parent_id=tree.leaf)
    found = tree.get(target) if target is not None else None
    if found is None:
        raise MessageNotFound(str(target))
    match action:
        case "edit":
            if found.role != "user":
                raise InvalidTarget("an edit names a user message")
            context = tree.path(found.parent_id) if found.parent_id is not None else []
            return TurnPlan(context, parent_id=found.parent_id)
        case "regenerate":
            user = found
            if found.role == "assistant":
                parent = tree.get(found.parent_id) if found.parent_id is not None else None
                if parent is None or parent.role != "user":
                    raise InvalidTarget("this answer answers no user message")
                user = parent
            context = tree.path(user.id)
            return TurnPlan(context[:-1], answers=user)
        case _:  # continue
            parent = tree.get(found.parent_id) if found.parent_id is not None else None
            stopped_early = found.status in _CONTINUABLE or (
                found.status == "complete" and found.finish_reason == "MAX_TOKENS"
            )
            if (
                found.role != "assistant"
                or not tree.is_leaf(found.id)
                or not stopped_early
                or parent is None
            ):
                raise NotContinuable(found.id)
            context = tree.path(parent.id)
            return TurnPlan(context, continued=found, user=parent)
