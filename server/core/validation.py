"""One reading of a pydantic ``ValidationError`` for every error the server shows."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError, default: str) -> tuple[str, str]:
    """``(dotted field path, message)`` of the first error; ``default`` names the whole
    input when the error is not about one field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or default
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return field, message
