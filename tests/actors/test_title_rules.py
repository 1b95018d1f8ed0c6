"""The text rules of titles (docs/api.md, Conversations), with hypothesis: a provisional
title is the first message's first 50 characters (CONTRACT.md); what a model writes is
cleaned into one short line; the demo model's title reads well."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from actors.models.titles import TITLE_CHARS, clean_title, demo_title, provisional_title

_words = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=0, max_size=120)


@given(_words)
def test_a_provisional_title_is_the_messages_first_50_characters(message: str) -> None:
    """CONTRACT.md: a new conversation's short title is its first 50 characters
    (whitespace collapsed), until the model's title replaces it."""
    title = provisional_title(message)
    joined = " ".join(message.split())
    assert len(title) == min(TITLE_CHARS, len(joined))
    assert joined.startswith(title)


@given(st.text(max_size=300))
def test_a_cleaned_title_is_one_short_line_of_whole_words(raw: str) -> None:
    title = clean_title(raw)
    if title is None:
        return
    assert title and len(title) <= TITLE_CHARS
    assert title == " ".join(title.split()) and all(ch.isprintable() for ch in title)
    assert title[0] not in "\"'`*#" and title[-1] not in ".,;:"
    # Words of the first line (only the ends may lose quotes or marks, or a label).
    first_line = next(ln for ln in raw.splitlines() if ln.strip())
    printable = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in first_line)
    assert set(title.split()[1:-1]) <= set(printable.split())


@given(st.text(max_size=200))
def test_a_demo_title_is_short_and_capitalised(message: str) -> None:
    title = demo_title(message)
    if title is None:
        assert not any(ch.isalnum() for ch in message)
        return
    assert 0 < len(title) <= TITLE_CHARS
    assert title[0] == title[0].upper() or len(title[0].upper()) > 1  # "ß" stays
    assert title[-1] not in ".,;:!?"
    assert len(title.split()) <= 6


def test_demo_titles_read_well() -> None:
    assert demo_title("Hi! can you plan a trip to Lisbon for me in May?") == (
        "Plan a trip to Lisbon"
    )
    assert demo_title("what is a fern?") == "What is a fern"
    assert demo_title("Hello there, demo") == "Demo"
    assert demo_title("hi") == "Hi"
    assert demo_title("???") is None
    assert clean_title('**Title:** "Ferns and Mosses".') == "Ferns and Mosses"
    assert clean_title("   \n\n") is None
