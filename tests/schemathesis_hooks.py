"""Checks schemathesis adds to its own when it fuzzes a live server (test_fuzz_http.py):
no answer is an HTML error page or carries a Python traceback.

Also one parse at a time through ``ast.parse`` in the ``st`` process: CPython 3.11 keeps
the AST constructor's recursion depth in per-interpreter state that threads share, so two
threads parsing at once can fail with ``SystemError: AST constructor recursion depth
mismatch`` (reported from threaded programs, e.g. CPython gh-106905 and pytest #10763).
Hypothesis parses lambda sources to describe strategies, on both schemathesis workers'
threads: one run in six failed that way on 2026-12-07, inside hypothesis, before any
request was made.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

import schemathesis

_parse = ast.parse
_parsing = threading.Lock()


def _one_parse_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _one_parse_at_a_time

_HTML_PAGES = {"/device", "/app"}


@schemathesis.check
def no_html_error_or_traceback(ctx: Any, response: Any, case: Any) -> None:
    # A downloaded attachment or thumbnail is the file's own bytes, not text.
    text = (response.content or b"").decode("utf-8", "replace")
    assert "Traceback (most recent call last)" not in text, "a traceback leaked"
    assert 'File "/' not in text, "a source path leaked"
    kind = response.headers.get("content-type", [""])
    kind = kind[0] if isinstance(kind, list) and kind else str(kind)
    if response.status_code >= 400 and case.path not in _HTML_PAGES:
        assert "html" not in kind.lower(), f"an HTML error page ({response.status_code})"
