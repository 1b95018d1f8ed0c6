"""What an uploaded file is, decided from its bytes: never from its name or the type the
client declared (docs/api.md, Attachments).

Binary formats by their signature (the ``filetype`` library reads the first bytes);
anything else is text when the whole file is valid UTF-8 without NUL characters (plain
text, Markdown, code, and SVG too: an SVG is never taken for an image, since a script can
hide in it). The name only tells Markdown from other text, both text either way. A file
that is neither is refused (``415``), as is a type not in ``CERO_ATTACHMENT_TYPES``.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection

import filetype

#: How many leading bytes the signature check reads (``filetype`` looks at most at 8 KiB).
HEAD_BYTES = 8192

#: ``filetype``'s names for a type, where the contract uses another (one name per type).
_CANONICAL = {
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "image/apng": "image/png",
}

TEXT = "text/plain"
MARKDOWN = "text/markdown"
_MARKDOWN_SUFFIXES = (".md", ".markdown")


class Sniffer:
    """Fed a file chunk by chunk (nothing kept but its first :data:`HEAD_BYTES`), then
    asked what it is."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = True

    def feed(self, chunk: bytes) -> None:
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        if self._text:
            if b"\x00" in chunk:
                self._text = False
                return
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError:
                self._text = False

    def mime_type(self, name: str) -> str | None:
        """The file's type (``None``: neither a known binary format nor text)."""
        kind = filetype.guess(bytes(self._head)) if self._head else None
        if kind is not None:
            mime = str(kind.mime)
            return _CANONICAL.get(mime, mime)
        if self._text:
            try:
                self._decoder.decode(b"", final=True)  # a sequence cut at the end
            except UnicodeDecodeError:
                return None
            return MARKDOWN if name.lower().endswith(_MARKDOWN_SUFFIXES) else TEXT
        return None


def accepted(mime_type: str | None, allowed: Collection[str]) -> bool:
    return mime_type is not None and mime_type in allowed


def is_image(mime_type: str) -> bool:
    """Shown inline and given a thumbnail (SVG is never one: see the module docstring)."""
    return mime_type.startswith("image/") and mime_type != "image/svg+xml"


def is_text(mime_type: str) -> bool:
    return mime_type.startswith("text/")


#: A name shown for a file: no path, no control characters, at most this many characters.
NAME_CHARS = 255


def clean_name(raw: str | None) -> str:
    """The client's file name, for display only: its last path segment (``/`` or ``\\``),
    without control characters (C0, C1, DEL, and the bidirectional overrides), trimmed to
    :data:`NAME_CHARS`; ``"file"`` when nothing is left. It never names a path here: the
    store keys files by their hash."""
    text = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(
        ch
        for ch in text
        if ch.isprintable() and not ("\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069")
    ).strip()
    kept = kept.lstrip(".").strip()  # no hidden or relative names ("..", ".env")
    return kept[:NAME_CHARS] if kept else "file"
