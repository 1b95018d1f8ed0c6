"""The usage example of docs/client-library.md runs as written against the live app (both
engines), so the page cannot drift from the library."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOC = Path(__file__).resolve().parents[3] / "docs" / "client-library.md"


async def test_the_usage_example_runs(
    live: Live, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    source = block.group(1)
    assert source.rstrip().endswith(")") and "asyncio.run(main(" in source
    # Everything but the last line (asyncio.run: the test's loop is already running).
    body = source[: source.rindex("asyncio.run(main(")]
    namespace: dict[str, Any] = {}
    exec(compile(body, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    await namespace["main"](live.url, token)
    out = capsys.readouterr().out
    assert "signed in as Sdk" in out
    assert "conversation.renamed" in out and "gone: not_found" in out
