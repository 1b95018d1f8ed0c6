"""Wall-clock time and the contract's timestamp format (ISO 8601 UTC, milliseconds, ``Z``).

The one place both packages take ``now`` and format it: a naive datetime (SQLite hands
some back) is taken as UTC everywhere, never as local time.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive value is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """``2026-11-25T15:07:35.123Z``: what Better Auth emits and its client parses as a Date."""
    moment = as_utc(moment)
    # The year always in four digits (glibc's %Y writes year 5 as "5": not RFC 3339; an
    # imported file may carry any year).
    return (
        f"{moment.year:04d}"
        + moment.strftime("-%m-%dT%H:%M:%S.")
        + (f"{moment.microsecond // 1000:03d}Z")
    )


def parse_iso(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))
