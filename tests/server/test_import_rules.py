"""The import rules of ``make lint`` (``lint-imports``, contracts in pyproject.toml) hold
on the code, and fail on a copy of it with one forbidden import added (issue 22): a rule
that cannot fail proves nothing.

One rule is checked here rather than by ``lint-imports``: ``bench/`` never imports
``tests/`` (they share fakes through ``standins/``). Counting ``bench`` and ``tests`` as
root packages would break the actors' seam contract, which they cross on purpose (unit
tests and micro-benchmarks of actors' internals).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("server", "actors", "cluster", "state", "client", "standins")

needs_lint_imports = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="lint-imports not installed"
)


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


@needs_lint_imports
def test_the_code_keeps_every_contract() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " 0 broken." in done.stdout


@needs_lint_imports
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


def _imports_of_tests(source: str, module: str) -> list[str]:
    """The imports of ``tests`` (or a module under it) in ``source``, the text of the
    dotted ``module`` (relative imports resolved against it), as ``line: module``."""
    found = []
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [target] if target else []
            if not node.module:
                names += [f"{target}.{alias.name}".lstrip(".") for alias in node.names]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] == "tests"]
    return found


def test_the_benchmarks_never_import_the_tests() -> None:
    offenders = {
        str(path.relative_to(ROOT)): hits
        for path in sorted((ROOT / "bench").rglob("*.py"))
        if (
            hits := _imports_of_tests(
                path.read_text(), ".".join(path.relative_to(ROOT).with_suffix("").parts)
            )
        )
    }
    assert offenders == {}, "bench/ imports tests/: share it through standins/ instead"


@pytest.mark.parametrize(
    ("line", "caught"),
    [
        ("import tests.conftest", True),
        ("from tests.auth_helpers import bearer", True),
        ("from tests import conftest", True),
        ("from .. import tests", True),
        ("from ..tests.conftest import live_app", True),
        ("from standins.users import bearer", False),
        ("import testsuite", False),
        ("from . import tests", False),  # bench.tests, not the tests package
    ],
)
def test_the_benchmarks_rule_can_fail(line: str, caught: bool) -> None:
    source = f"def seed() -> None:\n    {line}\n"
    assert bool(_imports_of_tests(source, "bench.seed")) is caught
