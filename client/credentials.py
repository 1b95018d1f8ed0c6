"""Where ``cero login`` keeps its token: the system keyring when one works, else a file.

The file, ``$XDG_CONFIG_HOME/cero/credentials.json`` (``~/.config/cero/…`` by default), is
created owner-only (0600, its folder 0700) and replaced atomically. It always records which
servers the CLI is signed in to and as whom; the token itself lives in the keyring when
``keyring`` finds a usable backend (Secret Service, macOS Keychain, Windows Credential
Locker), and in the file otherwise — or always, with ``CERO_CREDENTIAL_STORE=file``.
Tokens are keyed by the server URL, so one CLI can be signed in to several servers.
"""

from __future__ import annotations

import contextlib
import os
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

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": 1, "servers": {}}
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CliError(
                f"{self.path} is not valid JSON; delete it and run `cero login`"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            raise CliError(f"{self.path} is not a cero credentials file")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".credentials.", dir=self.directory)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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
