"""Where ``cero chat -i`` keeps the lines typed at its prompt (up/down recall, Ctrl-R search).

The file is ``history`` in the CLI's config folder (``$XDG_CONFIG_HOME/cero/``, else
``~/.config/cero/``, as for the credentials), or ``$CERO_HISTORY_FILE``. It holds what
was typed, so it is the owner's alone: created 0600 in a 0700 folder, a looser mode of
ours is tightened, and a file that is not a regular one, is a symlink or belongs to
another user is not used (the session then keeps its lines in memory only and says so).
``--no-history`` or ``CERO_HISTORY=0`` (``off``, ``no``, ``false``) turn the file off:
nothing is read or written, and arrows recall only the lines of this session.

The format is prompt_toolkit's :class:`~prompt_toolkit.history.FileHistory` (a ``# date``
line, then the entry's lines each prefixed with ``+``), appended to after every line.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from client.credentials import config_dir

OFF = frozenset({"0", "off", "no", "false"})


class HistoryRefused(Exception):
    """The history file cannot be used safely; the text says why."""


def history_path(environ: Mapping[str, str], *, disabled: bool = False) -> Path | None:
    """The history file, or ``None`` when history is off (``--no-history``,
    ``CERO_HISTORY=0``)."""
    if disabled or environ.get("CERO_HISTORY", "").strip().lower() in OFF:
        return None
    override = environ.get("CERO_HISTORY_FILE", "").strip()
    if override:
        return Path(override).expanduser()
    return config_dir(dict(environ)) / "history"


def _open_private(path: Path, flags: int) -> int:
    """``path`` opened with ``flags`` (created 0600), checked: a regular file of ours
    with no other link, its mode tightened to 0600 if it was looser."""
    for extra in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"):
        flags |= getattr(os, extra, 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise HistoryRefused(f"{path} is a symlink") from None
        raise HistoryRefused(f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HistoryRefused(f"{path} is not a regular file")
        if sys.platform != "win32":
            if st.st_uid != os.getuid():
                raise HistoryRefused(f"{path} belongs to another user (uid {st.st_uid})")
            if st.st_nlink != 1:
                raise HistoryRefused(f"{path} has other hard links")
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


class PrivateFileHistory(FileHistory):
    """:class:`FileHistory` whose file is created and kept owner-only (never through a
    symlink)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def store_string(self, string: str) -> None:
        fd = _open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        with os.fdopen(fd, "ab") as f:
            f.write(f"\n# {datetime.now()}\n".encode())
            for line in string.split("\n"):
                f.write(f"+{line}\n".encode("utf-8", errors="replace"))


def open_history(path: Path | None) -> tuple[History, str | None]:
    """The history for the prompt, and why the file is not used (``None``: it is, or
    history is off). The file and its folder are created here, owner-only."""
    if path is None:
        return InMemoryHistory(), None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(_open_private(path, os.O_RDONLY | os.O_CREAT))
    except HistoryRefused as exc:
        return InMemoryHistory(), str(exc)
    except OSError as exc:
        return InMemoryHistory(), f"{path.parent}: {exc.strerror}"
    return PrivateFileHistory(path), None
