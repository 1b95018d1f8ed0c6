"""Opaque identifiers and token hashing shared by the tables and sign-in."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_id() -> str:
    """An opaque, unguessable id: 144 random bits, URL-safe, 24 characters, never starting
    with ``-`` (ids are typed as command-line arguments, where a leading ``-`` reads as an
    option; the first character has 63 values, 143.98 bits in all)."""
    while True:
        ident = secrets.token_urlsafe(18)
        if not ident.startswith("-"):
            return ident


def new_token(nbytes: int = 32) -> str:
    """A bearer secret (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def _bytes(text: str) -> bytes:
    # "surrogatepass": a value decoded from non-UTF-8 header bytes carries lone surrogates,
    # which plain UTF-8 cannot encode; it must hash (to nothing stored), never raise.
    return text.encode("utf-8", "surrogatepass")


def token_hash(token: str) -> str:
    """SHA-256 hex digest: the only form in which tokens and device codes are stored."""
    return hashlib.sha256(_bytes(token)).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(_bytes(a), _bytes(b))
