"""The CLI's terminal filter (issue 20, item 9): whatever the server sends, cut into whatever
pieces, what reaches the terminal holds no control character but ``\\n`` and ``\\t``; text
without controls passes unchanged; escape sequences go whole, even cut across pieces."""

from __future__ import annotations

import io
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from client.output import Output
from client.terminal_text import TerminalFilter, clean, is_control

CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\n\t"] + [
    chr(c) for c in range(0x7F, 0xA0)
]


def forbidden(text: str) -> list[str]:
    return [c for c in text if c in CONTROLS]


def through(pieces: list[str]) -> str:
    f = TerminalFilter()
    return "".join(f.feed(p) for p in pieces)


# Text rich in what terminals act on: ESC, the sequence introducers and terminators, C1.
ESCAPY = st.text(
    alphabet=st.one_of(
        st.sampled_from(["\x1b", "[", "]", "P", "\\", "\x07", "\x9b", "\x9c", "\x9d", ";", "\n"]),
        st.sampled_from(CONTROLS),
        st.characters(),
    ),
    max_size=80,
)


def cuts(text: str, points: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(ESCAPY, st.lists(st.integers(min_value=0), max_size=8))
def test_no_control_reaches_the_terminal_however_the_text_is_cut(
    text: str, points: list[int]
) -> None:
    pieces = cuts(text, points)
    out = through(pieces)
    assert forbidden(out) == []
    assert out == through([text])  # the same whatever the cut: nothing is held back


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(blacklist_characters=CONTROLS), max_size=80),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_text_without_controls_passes_unchanged(text: str, points: list[int]) -> None:
    assert through(cuts(text, points)) == text


def test_sequences_are_dropped_whole_even_across_tokens() -> None:
    attacks = {
        "title": ("a\x1b]0;pwned\x07b", "ab"),
        "title, ST": ("a\x1b]2;pwned\x1b\\b", "ab"),
        "clear": ("a\x1b[2J\x1b[3Jb", "ab"),
        "clipboard": ("a\x1b]52;c;aGVsbG8=\x07b", "ab"),
        "hidden link": ("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"),
        "C1 CSI": ("a\x9b31mred\x9b0m", "ared"),
        "C1 OSC": ("a\x9d0;t\x9cb", "ab"),
        "DCS": ("a\x1bP+q544e\x1b\\b", "ab"),
        "charset": ("a\x1b(0b", "ab"),
        "overwrite": ("safe\rEVIL\x08\x7f", "safeEVIL"),
        "unterminated": ("a\x1b]0;swallow this line\nnext", "a\nnext"),
    }
    for name, (attack, shown) in attacks.items():
        assert clean(attack) == shown, name
        for i in range(len(attack) + 1):  # every cut into two tokens
            assert through([attack[:i], attack[i:]]) == shown, (name, i)
    assert all(is_control(c) for c in CONTROLS) and not is_control("\u202e")


def test_output_filters_stdout_and_stderr_but_not_json_or_raw() -> None:
    out, err = io.BytesIO(), io.StringIO()
    o = Output(out, err)
    o.text("x\x1b]52;c;")
    o.text("aGk=\x07y")
    o.end_line()
    o.note("[read] \x1b]0;t\x07page")
    o.error("bad \x1b[2Jthing")
    o.json({"text": "\x1b[2J\x9b"})
    assert out.getvalue() == b'xy\n{"text":"\\u001b[2J\xc2\x9b"}\n'
    assert err.getvalue() == "[read] page\ncero: error: bad thing\n"
    raw = io.BytesIO()
    Output(raw, io.StringIO(), raw=True).text("\x1b]0;t\x07")
    assert raw.getvalue() == b"\x1b]0;t\x07"
