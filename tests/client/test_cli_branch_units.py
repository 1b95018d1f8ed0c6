"""The branch commands' parts that need no server: their arguments, the ``‹i/n›`` markers,
the tree drawing (from a ``GET …/tree`` fixture) and the short-id lookup.

The commands against a live server are in ``test_cli_branches.py``."""

from __future__ import annotations

from typing import Any

import pytest

from client.branches import match_id
from client.errors import CliError
from client.main import parser
from client.tree import active_path, draw_tree, sibling_marker, snippet, summary


def message(
    mid: str,
    role: str,
    parent: str | None,
    content: str,
    siblings: list[str],
    status: str = "complete",
) -> dict[str, Any]:
    """A message as ``GET …/tree`` gives it (ids padded to the server's 24 characters)."""
    pad = "0" * 22
    out: dict[str, Any] = {
        "id": mid + pad,
        "role": role,
        "content": content,
        "status": status,
        "createdAt": "2026-12-07T04:38:51.213Z",
        "timestamp": "04:38",
        "parentId": parent + pad if parent else None,
        "siblingIds": [s + pad for s in siblings],
        "siblingIndex": siblings.index(mid),
        "siblingCount": len(siblings),
    }
    if role == "assistant":
        out["aiModel"] = "demo"
    return out


#: hi → two answers (a1, then a2 regenerated, cancelled); a2 → two user turns (u3, then u4
#: edited); a second first message (u9, hi edited). Active leaf: a5.
TREE: dict[str, Any] = {
    "conversation": {"id": "C", "shortTitle": "hi"},
    "activeLeafId": "a5" + "0" * 22,
    "messages": [
        message("u1", "user", None, "hi", ["u1", "u9"]),
        message("a1", "assistant", "u1", "Hello there, " * 8, ["a1", "a2"]),
        message("u2", "user", "a1", "and\nthen?", ["u2"]),
        message("a3", "assistant", "u2", "more", ["a3"]),
        message("a2", "assistant", "u1", "Another answer", ["a1", "a2"], "cancelled"),
        message("u3", "user", "a2", "next", ["u3", "u4"]),
        message("a4", "assistant", "u3", "x", ["a4"]),
        message("u4", "user", "a2", "next, edited", ["u3", "u4"]),
        message("a5", "assistant", "u4", "y", ["a5"]),
        message("u9", "user", None, "hi, edited", ["u1", "u9"]),
    ],
}


def test_sibling_markers() -> None:
    assert sibling_marker({"siblingIndex": 1, "siblingCount": 3}) == "‹2/3›"
    assert sibling_marker({"siblingIndex": 0, "siblingCount": 2}) == "‹1/2›"
    assert sibling_marker({"siblingIndex": 0, "siblingCount": 1}) == ""
    assert sibling_marker({}) == ""  # a server without branches: no marker
    assert sibling_marker({"siblingIndex": "1", "siblingCount": 2}) == ""


def test_snippet_is_one_line_of_at_most_60_characters() -> None:
    assert snippet("a\n b\t c") == "a b c"
    assert snippet("x" * 60) == "x" * 60
    cut = snippet("word " * 30)
    assert len(cut) <= 60 and cut.endswith("…") and "\n" not in cut


def test_summary_line() -> None:
    a2 = TREE["messages"][4]
    assert summary(a2) == "a2000000  demo ‹2/2› (cancelled)  Another answer"
    assert summary(TREE["messages"][2]) == "u2000000  you  and then?"


def test_the_tree_is_drawn_with_the_active_path_marked() -> None:
    assert draw_tree(TREE) == [
        "* ├─ u1000000  you ‹1/2›  hi",
        "  │  ├─ a1000000  demo ‹1/2›  " + snippet("Hello there, " * 8),
        "  │  │  u2000000  you  and then?",
        "  │  │  a3000000  demo  more",
        "* │  └─ a2000000  demo ‹2/2› (cancelled)  Another answer",
        "  │     ├─ u3000000  you ‹1/2›  next",
        "  │     │  a4000000  demo  x",
        "* │     └─ u4000000  you ‹2/2›  next, edited",
        "* │        a5000000  demo  y",
        "  └─ u9000000  you ‹2/2›  hi, edited",
    ]


def test_a_conversation_without_branches_stays_in_one_column() -> None:
    straight = {"activeLeafId": "a3" + "0" * 22, "messages": TREE["messages"][:4]}
    # (u1 and a1 keep the markers the fixture gives them; nothing branches here.)
    assert [line[:12] for line in draw_tree(straight)] == [
        "* u1000000  ",
        "* a1000000  ",
        "* u2000000  ",
        "* a3000000  ",
    ]
    assert draw_tree({"activeLeafId": None, "messages": []}) == []


def test_active_path_follows_parent_ids() -> None:
    pad = "0" * 22
    assert active_path(TREE["messages"], "a5" + pad) == {m + pad for m in ("u1", "a2", "u4", "a5")}
    assert active_path(TREE["messages"], None) == set()


def test_a_message_id_may_be_a_unique_prefix() -> None:
    messages = TREE["messages"]
    assert match_id(messages, "a2000000")["id"] == "a2" + "0" * 22
    assert match_id(messages, "u9" + "0" * 22)["role"] == "user"
    with pytest.raises(CliError, match="several message ids"):
        match_id(messages, "a")
    with pytest.raises(CliError, match="no message 'zz'"):
        match_id(messages, "zz")


def test_branch_command_arguments() -> None:
    args = parser().parse_args(["regenerate", "C"])
    assert (args.conversation_id, args.message_id, args.model, args.tool) == ("C", None, None, [])
    args = parser().parse_args(["regenerate", "C", "M", "-m", "demo", "-t", "google_search"])
    assert (args.message_id, args.model, args.tool, args.json) == (
        "M",
        "demo",
        ["google_search"],
        False,
    )
    args = parser().parse_args(["edit", "C", "M", "-", "--json", "--raw"])
    assert (args.message_id, args.text, args.json, args.raw) == ("M", "-", True, True)
    assert parser().parse_args(["continue", "C"]).message_id is None
    assert parser().parse_args(["branches", "C", "--json"]).json
    assert parser().parse_args(["switch", "C", "M"]).message_id == "M"
    for bad in (["edit", "C", "M"], ["switch", "C"], ["branches"], ["regenerate", "C", "-t", "x"]):
        with pytest.raises(SystemExit) as usage:
            parser().parse_args(bad)
        assert usage.value.code == 2


def test_chat_continue_last_is_its_own_flag() -> None:
    """``-c ID MESSAGE`` names a conversation; ``-C`` continues the newest one, and so does
    ``-c MESSAGE`` alone (argparse hands the message to ``-c``; ``cmd_chat`` reads it as the
    message, like ``llm -c``)."""
    args = parser().parse_args(["chat", "-C", "hi"])
    assert (args.continue_last, args.conversation, args.message) == (True, None, "hi")
    args = parser().parse_args(["chat", "hi", "-c", "ID"])
    assert (args.continue_last, args.conversation, args.message) == (False, "ID", "hi")
    assert parser().parse_args(["chat", "-c", "ID", "hi"]).conversation == "ID"
    args = parser().parse_args(["chat", "-c", "hi"])
    assert (args.conversation, args.message) == ("hi", None)  # cmd_chat: the newest, "hi"
    for bad in (["chat", "-C", "-c", "ID", "hi"],):
        with pytest.raises(SystemExit) as usage:
            parser().parse_args(bad)
        assert usage.value.code == 2
