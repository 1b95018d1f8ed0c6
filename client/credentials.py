"""Where ``cero login`` keeps its token: the system keyring when one works, else a file.

The file, ``$XDG_CONFIG_HOME/cero/credentials.json`` (``~/.config/cero/…`` by default), is
created owner-only (0600, its folder 0700) and replaced atomically. It always records which
servers the CLI is signed in to and as whom; the token itself lives in the keyring when
``keyring`` finds a usable backend (Secret Service, macOS Keychain, Windows Credential
Locker), and in the file otherwise — or always, with ``CERO_CREDENTIAL_STORE=file``.
Tokens are keyed by the server URL, so one CLI can be signed in to several servers.

Another local user must not be able to swap in a token (and so read every later question):
a folder of ours that group or others may read or write is tightened to 0700 (with a
warning), a credentials file of ours that they may read to 0600; a folder or file owned by
someone else, a credentials file that is a symlink, not a regular file or has more than one
link is refused. ``cero login`` checks all that before it asks the server for a code, so a
store it could not write never leaves an approved, unused session behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from client.errors import CliError

log = structlog.get_logger("cero.credentials")

KEYRING_SERVICE = "cero-api"
Store = Literal["auto", "keyring", "file"]


def config_dir(environ: os._Environ[str] | dict[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "cero"


@dataclass(frozen=True)
class Credential:
    server: str
    token: str
    user: dict[str, Any]
    store: Literal["keyring", "file"]


class CredentialStore:
    """Read, save and forget the token of one server."""

    def __init__(self, directory: Path, preference: Store = "auto") -> None:
        self.directory = directory
        self.path = directory / "credentials.json"
        self.preference = preference

    # -- the file ------------------------------------------------------------------------

    def _secure_directory(self, *, create: bool) -> bool:
        """Make sure only we can use the folder; whether it exists."""
        if create:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            st = self.directory.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CliError(f"cannot use {self.directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CliError(f"{self.directory} is not a folder; move it away")
        if sys.platform == "win32":  # owner and mode bits mean nothing there
            return True
        if st.st_uid != os.getuid():
            raise CliError(
                f"{self.directory} belongs to another user (uid {st.st_uid}), who could "
                "replace the token in it; remove it, or set XDG_CONFIG_HOME elsewhere"
            )
        loose = stat.S_IMODE(st.st_mode)
        if loose & 0o077:
            try:
                os.chmod(self.directory, 0o700)
            except OSError as exc:
                raise CliError(
                    f"{self.directory} is open to other users (mode {loose:04o}) and "
                    f"cannot be made 0700: {exc.strerror}"
                ) from None
            log.warning(
                "config_folder_tightened",
                folder=str(self.directory),
                was=f"{loose:04o}",
                now="0700",
            )
        return True

    def _check_file(self, fd: int) -> None:
        """The open credentials file must be ours alone (a loose mode of ours is fixed)."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CliError(f"{self.path} is not a regular file; move it away")
        if sys.platform == "win32":
            return
        if st.st_uid != os.getuid():
            raise CliError(
                f"{self.path} belongs to another user (uid {st.st_uid}); it was not written "
                "by `cero login`: move it away and sign in again"
            )
        if st.st_nlink != 1:
            raise CliError(f"{self.path} has other hard links; move it away and sign in again")
        loose = stat.S_IMODE(st.st_mode)
        if loose & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except OSError as exc:
                raise CliError(
                    f"{self.path} is open to other users (mode {loose:04o}) and cannot be "
                    f"made 0600: {exc.strerror}"
                ) from None
            log.warning(
                "credentials_file_tightened", file=str(self.path), was=f"{loose:04o}", now="0600"
            )

    def _read(self) -> dict[str, Any]:
        if not self._secure_directory(create=False):
            return {"version": 1, "servers": {}}
        # Not through a symlink; a FIFO put there does not block the open (fstat refuses it).
        flags = os.O_RDONLY
        for extra in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"):
            flags |= getattr(os, extra, 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return {"version": 1, "servers": {}}
        except OSError as exc:
            if self.path.is_symlink():
                raise CliError(
                    f"{self.path} is a symlink; the CLI only uses a file it wrote itself: "
                    "move it away and sign in again"
                ) from None
            raise CliError(f"cannot read {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            self._check_file(fh.fileno())
            raw = fh.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CliError(
                f"{self.path} is not valid JSON; delete it and run `cero login`"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            raise CliError(f"{self.path} is not a cero credentials file; move it away")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        try:
            self._secure_directory(create=True)
            fd, tmp = tempfile.mkstemp(prefix=".credentials.", dir=self.directory)  # 0600
        except OSError as exc:
            raise CliError(f"cannot write in {self.directory}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise CliError(f"cannot write {self.path}: {exc.strerror}") from None
            raise

    def check_writable(self) -> None:
        """Raise :class:`CliError` now if :meth:`save` would fail later: ``cero login`` asks
        this before the server is asked for a code, so no approval is wasted."""
        self._read()  # a file not ours, unreadable or broken; a folder not ours
        try:
            self._secure_directory(create=True)
            fd, probe = tempfile.mkstemp(prefix=".credentials.", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CliError(f"cannot write in {self.directory}: {exc.strerror}") from None
        self._keyring()  # CERO_CREDENTIAL_STORE=keyring without a keyring

    # -- the keyring ---------------------------------------------------------------------

    def _keyring(self) -> Any | None:
        """The keyring backend when one is usable and wanted, else ``None``."""
        if self.preference == "file":
            return None
        import keyring
        from keyring.backends import chainer, fail, null

        backend = keyring.get_keyring()
        usable = not isinstance(backend, fail.Keyring | null.Keyring) and not (
            isinstance(backend, chainer.ChainerBackend) and not backend.backends
        )
        if not usable:
            if self.preference == "keyring":
                raise CliError("CERO_CREDENTIAL_STORE=keyring but no system keyring is available")
            return None
        return backend

    # -- the API -------------------------------------------------------------------------

    def load(self, server: str) -> Credential | None:
        entry = self._read()["servers"].get(server)
        if not isinstance(entry, dict):
            return None
        raw_user = entry.get("user")
        user: dict[str, Any] = raw_user if isinstance(raw_user, dict) else {}
        if entry.get("store") == "keyring":
            token: str | None = None
            try:
                backend = self._keyring()
                if backend is not None:
                    token = backend.get_password(KEYRING_SERVICE, server)
            except CliError:
                raise
            except Exception as exc:  # a locked or vanished keyring: say so, don't crash
                raise CliError(f"cannot read the token from the system keyring: {exc}") from None
            return Credential(server, token, user, "keyring") if token else None
        token = entry.get("token")
        return Credential(server, token, user, "file") if isinstance(token, str) else None

    def save(self, server: str, token: str, user: dict[str, Any]) -> Credential:
        """Keep ``token``: in the keyring when one works, else in the file (0600)."""
        data = self._read()
        entry: dict[str, Any] = {"user": user, "savedAt": datetime.now(UTC).isoformat()}
        store: Literal["keyring", "file"] = "file"
        backend = self._keyring()
        if backend is not None:
            try:
                backend.set_password(KEYRING_SERVICE, server, token)
                store = "keyring"
            except Exception as exc:
                if self.preference == "keyring":
                    raise CliError(f"cannot store the token in the system keyring: {exc}") from None
                log.warning("keyring_unusable", error=str(exc))
        entry["store"] = store
        if store == "file":
            entry["token"] = token
        data["servers"][server] = entry
        self._write(data)
        return Credential(server, token, user, store)

    def forget(self, server: str) -> bool:
        """Delete the server's token everywhere it may be; whether there was one."""
        data = self._read()
        entry = data["servers"].pop(server, None)
        if isinstance(entry, dict) and entry.get("store") == "keyring":
            with contextlib.suppress(Exception):
                backend = self._keyring()
                if backend is not None:
                    backend.delete_password(KEYRING_SERVICE, server)
        if entry is not None:
            self._write(data)
        return entry is not None
