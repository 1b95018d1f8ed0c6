"""Checks schemathesis adds to its own when it fuzzes a live server (test_fuzz_http.py):
no answer is an HTML error page or carries a Python traceback."""

from __future__ import annotations

from typing import Any

import schemathesis

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
