"""Where the interactive mode keeps its history (``client.history``): the path and the
switches that turn it off, and the file kept owner-only (created 0600, a looser mode of
ours tightened, a symlink refused so the session keeps its lines in memory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prompt_toolkit.history import FileHistory, InMemoryHistory

from client.history import PrivateFileHistory, history_path, open_history


def test_the_path_and_what_turns_it_off(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert history_path(env) == tmp_path / "cero" / "history"  # beside the credentials
    assert history_path({**env, "CERO_HISTORY_FILE": str(tmp_path / "h")}) == tmp_path / "h"
    for off in ("0", "off", "No", "false"):
        assert history_path({**env, "CERO_HISTORY": off}) is None
    assert history_path({**env, "CERO_HISTORY": "1"}) == tmp_path / "cero" / "history"
    assert history_path(env, disabled=True) is None  # --no-history


def test_the_file_is_created_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "cero" / "history"
    history, problem = open_history(path)
    assert problem is None and isinstance(history, PrivateFileHistory)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    history.store_string("first")
    history.store_string("two\nlines")
    path.chmod(0o644)  # loosened by someone: tightened at the next line
    history.store_string("third")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(FileHistory(path).load_history_strings()) == ["third", "two\nlines", "first"]


@pytest.mark.skipif(os.name != "posix", reason="modes and symlinks")
def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "history"
    link.symlink_to(target)
    history, problem = open_history(link)
    assert isinstance(history, InMemoryHistory)
    assert problem == f"{link} is a symlink"


def test_off_is_in_memory(tmp_path: Path) -> None:
    history, problem = open_history(None)
    assert isinstance(history, InMemoryHistory) and problem is None
