"""Header-derived text made safe to hash, store and log.

aiohttp decodes header bytes that are not UTF-8 into lone surrogates (``surrogateescape``);
such strings cannot be encoded as UTF-8, so every header value that reaches the database or
the logs goes through :func:`clean_text` first, and every credential is shape-checked with
:func:`token_shaped` before it is hashed.
"""

from __future__ import annotations

import re

MAX_TOKEN_CHARS = 512

# A raw token (URL-safe base64) or Better Auth's signed ``token.<base64 sig>`` form, plain
# or URL-encoded.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.\-=%+/]{1,512}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def token_shaped(value: str) -> bool:
    """Whether ``value`` can be a session token (raw or signed); anything else is invalid."""
    return _TOKEN_RE.fullmatch(value) is not None


def clean_text(value: str | None, limit: int) -> str | None:
    """``value`` as valid UTF-8 text without control characters, at most ``limit`` chars;
    ``None`` when empty."""
    if not value:
        return None
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL_RE.sub("", text)[:limit]
    return text or None
