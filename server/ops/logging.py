"""structlog set-up: JSON lines when stderr is not a TTY, pretty output on a TTY, written
through :mod:`server.ops.log_output` (never blocks, never raises: a log pipe whose reader is
gone or stopped cannot hold up the server or its shutdown).

No ``dict_tracebacks`` with locals: they would print secrets held in local variables.

No secret is logged on purpose (``tests/server/ops/test_no_secrets_in_logs.py`` runs a full flow at
debug level and finds none). :func:`redact` is the guard for the next log call that would:
a value under a secret's key name (:data:`SECRET_KEYS`) is replaced, and so are a bearer
token or a secret query parameter (``token=``, ``user_code=``, ``code=``, ``state=``...)
inside any string, exception texts included; the standard library's records (libraries'
warnings, which may carry a URL) pass the same scrub.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import orjson
import structlog

from server.ops.log_output import log_output

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


REDACTED = "[redacted]"
#: Event keys whose value is a secret, whatever it is.
SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "session_token",
        "refresh_token",
        "device_code",
        "user_code",
        "secret",
        "client_secret",
        "password",
        "cookie",
        "cookies",
        "authorization",
        "api_key",
        "code_verifier",
        "verifier",
    }
)
#: Secrets inside text: a bearer credential, a secret query or form parameter, a cookie.
_IN_TEXT = re.compile(
    r"(?i)(\bbearer[ .]|\b(?:token|access_token|device_code|user_code|code|state|code_verifier"
    r"|client_secret|key|better-auth\.session_token|better-auth\.session_data)=)"
    r"[^\s&;,\"']+"
)


def scrub(text: str) -> str:
    """``text`` with every secret :data:`_IN_TEXT` recognises replaced."""
    return _IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)


def redact(
    _logger: Any, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: secrets out of every event (see the module's docstring)."""
    for key, value in event_dict.items():
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


class _ScrubFilter(logging.Filter):
    """The same scrub for the standard library's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    pretty = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # stderr through a sink that can neither block nor raise (server/ops/log_output.py); a
    # stream without a file descriptor (a test's buffer) is written directly.
    output = log_output(sys.stderr)
    processors: list[structlog.typing.Processor]
    if pretty:
        processors = [*shared, redact, structlog.dev.ConsoleRenderer()]
        factory: structlog.typing.WrappedLogger = structlog.PrintLoggerFactory(
            output or sys.stderr  # type: ignore[arg-type]
        )
    else:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            redact,  # after format_exc_info: the traceback's text is scrubbed too
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(output or sys.stderr.buffer)  # type: ignore[arg-type]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: keep them quiet unless they matter.
    logging.basicConfig(
        level=logging.WARNING,
        stream=output or sys.stderr,
        format="%(name)s %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ScrubFilter) for f in handler.filters):
            handler.addFilter(_ScrubFilter())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
