"""The import rules of ``make lint`` (``lint-imports``, contracts in pyproject.toml) hold
on the code, and fail on a copy of it with one forbidden import added (issue 22): a rule
that cannot fail proves nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("server", "actors", "cluster", "state", "client", "standins")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="lint-imports not installed")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("*.pyc"))
    return root


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)


def test_the_code_keeps_every_contract() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("cluster/keys.py", "import server.core.config", "cluster is not allowed to import server"),
        ("actors/clock.py", "import cluster.keys", "actors is not allowed to import cluster"),
        ("client/errors.py", "import server.core.errors", "client is not allowed to import server"),
        (
            "server/core/ids.py",
            "import server.storage.tables",
            "server.core is not allowed to import server.storage",
        ),
        ("actors/event_log.py", "import actors.conversation", "No cycles are allowed in actors"),
        # The actors' seam: outside actors/, only actors.api (and clock, error_text, models).
        (
            "server/transports/sse.py",
            "import actors.event_log",
            "Illegal imports of protected package actors.event_log",
        ),
        (
            "cluster/wire.py",
            "from actors.conversation import ConversationActor",
            "Illegal imports of protected package actors.conversation",
        ),
        ("state/window.py", "import actors.clock", "state is not allowed to import actors"),
        (
            "cluster/state/shared.py",
            "import server.limits.refusals",
            "cluster is not allowed to import server",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_lint(
    tmp_path: Path, module: str, line: str, expected: str
) -> None:
    root = _copy(tmp_path)
    _add_import(root / module, line)
    done = _lint(root)
    assert done.returncode != 0
    assert expected in " ".join(done.stdout.split()), done.stdout[-3000:]


@pytest.mark.parametrize(
    ("module", "imported", "expected"),
    [
        # An app key's type named from a package above (issue 22: keys live beside their type).
        (
            "server/core/app_keys.py",
            "server.storage.db",
            "server.core is not allowed to import server.storage",
        ),
        # ops and its siblings: metrics reads the writer through a protocol of its own.
        (
            "server/ops/metrics.py",
            "server.storage.batch_writer",
            "server.ops is not allowed to import server.storage",
        ),
        ("server/auth/sessions.py", "server.auth.current", "No cycles are allowed in server.auth"),
        ("cluster/keys.py", "server.core.config", "cluster is not allowed to import server"),
    ],
)
def test_a_type_only_import_counts_too(
    tmp_path: Path, module: str, imported: str, expected: str
) -> None:
    """``exclude_type_checking_imports = false``: an import under ``TYPE_CHECKING`` breaks
    a rule like any other."""
    assert "exclude_type_checking_imports = false" in (ROOT / "pyproject.toml").read_text()
    root = _copy(tmp_path)
    _add_import(
        root / module, f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import {imported}"
    )
    done = _lint(root)
    assert done.returncode != 0
    assert expected in " ".join(done.stdout.split()), done.stdout[-3000:]
