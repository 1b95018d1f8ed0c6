"""Conversation titles (docs/api.md, Conversations): the text rules every title follows,
the request a model gets to write one, and the offline ``demo`` model's own title.

A generated title is one line of at most :data:`TITLE_CHARS` characters, never cut mid-word
(only a single word longer than that is cut, ending with ``…``). A new conversation's
provisional title is its first message's first 50 characters, whitespace collapsed, as
CONTRACT.md fixes it (:func:`provisional_title`); after the first answer the
conversation's model writes a better one (:class:`TitleWriter`), which
:func:`clean_title` makes safe to show: a model may wrap it in quotes or markdown, add a
``Title:`` label, a second line or a final full stop.

Pure functions, no I/O: the server calls them, and so do the providers.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol, runtime_checkable

#: The longest title, in characters.
TITLE_CHARS = 50
#: What the model is told (the system instruction of a title request).
TITLE_INSTRUCTION = (
    "Write a title of at most 6 words for this conversation, in the language of the "
    "user's message. Answer with the title only: one line, no quotes, no markdown, "
    "no full stop at the end."
)
#: How much of the first message and of the first answer a title request carries.
TITLE_INPUT_CHARS = 2_000
#: Labels and marks a model may put around a title.
_LABEL = re.compile(r"^(?:title|titre|titel|título|titolo)\s*[:：-]\s*", re.IGNORECASE)
_WRAPPERS = "\"'`*_#~“”‘’«»„‚「」『』"
_TRAILING = ".,;:·…-–—/\\|"
#: How a first message often starts without saying anything about its subject (lower
#: case, compared word by word): greetings, "please", "can you", "help me", "I want to".
_OPENINGS: tuple[tuple[str, ...], ...] = tuple(
    tuple(phrase.split())
    for phrase in (
        "hi there",
        "hello there",
        "hey there",
        "hi",
        "hello",
        "hey",
        "hiya",
        "yo",
        "ok",
        "okay",
        "so",
        "well",
        "please",
        "pls",
        "can you",
        "could you",
        "would you",
        "will you",
        "help me",
        "i want to",
        "i need to",
        "i would like to",
        "i'd like to",
        "tell me",
    )
)
#: Words a title does not end with.
_DANGLING = frozenset(
    {"a", "an", "the", "to", "of", "and", "or", "for", "with", "in", "on", "at", "by"}
    | {"from", "my", "me", "your", "is", "are", "that", "which"}
)


def clip_words(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` with whitespace collapsed, at most ``limit`` characters, cut only between
    words: the longest prefix of its words that fits. A first word longer than ``limit``
    is cut and ends with ``…`` (``limit`` characters in all)."""
    words = text.split()
    out = ""
    for word in words:
        candidate = f"{out} {word}" if out else word
        if len(candidate) > limit:
            break
        out = candidate
    if not out and words:
        return words[0][: limit - 1] + "…"
    return out


def provisional_title(message: str) -> str:
    """A new conversation's title until the model's: the first :data:`TITLE_CHARS`
    characters of its first message, whitespace collapsed (CONTRACT.md: "short title =
    first 50 characters"; the cut may fall inside a word, which the generated title
    replaces)."""
    return " ".join(message.split())[:TITLE_CHARS]


def _printable(text: str) -> str:
    """Control and format characters (escape sequences, zero-width marks) become spaces."""
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)


def clean_title(raw: str) -> str | None:
    """What a model wrote, as a title: its first non-blank line, without a ``Title:``
    label, quotes or markdown around it, or punctuation after it; at most
    :data:`TITLE_CHARS` characters at a word boundary. ``None`` when nothing is left."""
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    text = " ".join(_printable(line).split())
    while True:  # "**Title:** \"Ferns\"" takes a few rounds; each one shortens it
        before = text
        text = text.strip(_WRAPPERS + " ")
        text = _LABEL.sub("", text)
        text = text.rstrip(_TRAILING + " ")
        if text == before:
            break
    text = clip_words(text)
    if not text.endswith("…"):  # a cut word keeps its mark
        text = text.rstrip(_TRAILING + " ")
    return text or None


def demo_title(message: str) -> str | None:
    """The ``demo`` model's title: the first words of the first message that say
    something (greetings, "please", "can you" and the like at the start skipped, marks
    around words dropped), at most six, not ending on "a", "the", "of"…; the first letter
    capitalised, no punctuation at the end. ``None`` when the message has no words at
    all (the provisional title stays)."""
    words = [w.strip(_WRAPPERS + _TRAILING + "!?¿¡") for w in _printable(message).split()]
    words = [w for w in words if any(ch.isalnum() for ch in w)]
    skipped = True
    while skipped:
        skipped = False
        lowered = [w.lower() for w in words]
        for opening in _OPENINGS:
            if len(words) > len(opening) and tuple(lowered[: len(opening)]) == opening:
                del words[: len(opening)]
                skipped = True
                break
    words = words[:6]
    while len(words) > 1 and words[-1].lower() in _DANGLING:
        words.pop()
    if not words:
        return None
    title = clean_title(" ".join(words)) or clip_words(" ".join(words))
    first = title[0].upper()
    return first + title[1:] if len(first) == 1 else title


def title_request_text(message: str, answer: str) -> str:
    """The one user turn of a title request: the first message and the first answer,
    each trimmed to :data:`TITLE_INPUT_CHARS` characters."""

    def trimmed(text: str) -> str:
        text = text.strip()
        return text if len(text) <= TITLE_INPUT_CHARS else text[:TITLE_INPUT_CHARS] + " …"

    return f"First message:\n{trimmed(message)}\n\nFirst answer:\n{trimmed(answer)}"


@runtime_checkable
class TitleWriter(Protocol):
    """A provider that writes titles: what ``model`` calls the conversation that began
    with ``message`` and got ``answer``. The raw text (the caller cleans it); raises
    :class:`~actors.models.base.ModelError` (or any error) when it cannot."""

    async def title(self, model: str, message: str, answer: str) -> str: ...
