"""The CLI's parts that need no server: the device-flow poll schedule (RFC 8628 §3.5), the
credential store (0600 file, XDG_CONFIG_HOME, a working keyring), help, and the rule that
the client imports nothing of the server."""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import orjson
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from client.credentials import KEYRING_SERVICE, CredentialStore, config_dir
from client.device_login import PollSchedule
from client.errors import CliError, Exit
from client.main import parser

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_poll_schedule_honours_interval_and_slow_down() -> None:
    schedule = PollSchedule.start({"interval": 2, "expires_in": 30}, now=100.0)
    assert schedule.delay() == 2
    schedule.record("authorization_pending")
    assert schedule.delay() == 2
    schedule.record("slow_down")
    assert schedule.delay() == 7  # +5 s for good
    schedule.record("authorization_pending")
    assert schedule.delay() == 7
    schedule.record("slow_down")
    assert schedule.delay() == 12
    assert not schedule.expired(129.9) and schedule.expired(130.0)
    assert PollSchedule.start({}, now=0).delay() == 5  # RFC 8628's default


def test_poll_schedule_backs_off_on_network_errors_and_ends_on_refusals() -> None:
    schedule = PollSchedule.start({"interval": 1}, now=0)
    delays = []
    for _ in range(8):
        schedule.network_error()
        delays.append(schedule.delay())
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    schedule.record("authorization_pending")  # an answer again: back to the interval
    assert schedule.delay() == 1
    with pytest.raises(CliError, match="denied") as denied:
        schedule.record("access_denied")
    assert denied.value.code == Exit.AUTH
    with pytest.raises(CliError, match="expired"):
        schedule.record("expired_token")
    with pytest.raises(CliError, match="invalid_grant"):
        schedule.record("invalid_grant")


def test_config_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "cero"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # The XDG spec: a relative path is invalid and ignored.
    assert config_dir({"XDG_CONFIG_HOME": "rel"}) == tmp_path / "home" / ".config" / "cero"
    assert config_dir({}) == tmp_path / "home" / ".config" / "cero"


def test_file_store_is_owner_only(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cero", "file")
    assert store.load("http://a") is None
    saved = store.save("http://a", "tok-a", {"name": "Ada"})
    store.save("http://b", "tok-b", {})
    assert saved.store == "file"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    found = store.load("http://a")
    assert found is not None and found.token == "tok-a" and found.user == {"name": "Ada"}
    assert store.forget("http://a") and not store.forget("http://a")
    assert store.load("http://a") is None
    assert store.load("http://b") is not None
    assert [p.name for p in store.directory.iterdir()] == ["credentials.json"]  # no temp left
    store.path.write_text("{not json")
    with pytest.raises(CliError, match="not valid JSON"):
        store.load("http://b")


NOBODY = 65534


def test_a_loose_folder_and_file_of_ours_are_tightened(tmp_path: Path) -> None:
    """Issue 20, item 10: a 0777 folder let another user swap in a token."""
    folder = tmp_path / "cero"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    store = CredentialStore(folder, "file")
    assert store.load("http://a") is None
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    store.save("http://a", "tok", {})
    store.path.chmod(0o644)
    folder.chmod(0o755)
    found = store.load("http://a")
    assert found is not None and found.token == "tok"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_credentials_file_the_cli_did_not_write_is_refused(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cero", "file")
    store.save("http://a", "mine", {})
    planted = tmp_path / "planted.json"
    planted.write_bytes(store.path.read_bytes().replace(b"mine", b"theirs"))
    store.path.unlink()
    store.path.symlink_to(planted)
    with pytest.raises(CliError, match="is a symlink"):
        store.load("http://a")
    with pytest.raises(CliError, match="is a symlink"):
        store.save("http://a", "t", {})
    store.path.unlink()
    os.link(planted, store.path)
    with pytest.raises(CliError, match="other hard links"):
        store.load("http://a")
    store.path.unlink()
    os.mkfifo(store.path)
    with pytest.raises(CliError, match="not a regular file"):
        store.load("http://a")  # and does not hang on the FIFO
    store.path.unlink()
    store.path.write_text('{"something": "else"}')
    with pytest.raises(CliError, match="not a cero credentials file"):
        store.check_writable()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_folder_or_file_of_another_user_is_refused(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cero", "file")
    store.save("http://a", "mine", {})
    os.chown(store.path, NOBODY, NOBODY)
    with pytest.raises(CliError, match="belongs to another user"):
        store.load("http://a")
    os.chown(store.path, 0, 0)
    os.chown(store.directory, NOBODY, NOBODY)
    with pytest.raises(CliError, match="belongs to another user"):
        store.load("http://a")
    with pytest.raises(CliError, match="belongs to another user"):
        store.check_writable()
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


class MemoryKeyring(KeyringBackend):
    """A working keyring backend (keyring's own plug-in API), kept in memory."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.secrets.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def test_a_working_keyring_holds_the_token(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    store = CredentialStore(tmp_path / "cero")
    saved = store.save("http://a", "secret-token", {"name": "Ada"})
    assert saved.store == "keyring"
    assert memory_keyring.secrets == {(KEYRING_SERVICE, "http://a"): "secret-token"}
    assert b"secret-token" not in store.path.read_bytes()
    assert orjson.loads(store.path.read_bytes())["servers"]["http://a"]["store"] == "keyring"
    found = store.load("http://a")
    assert found is not None and found.token == "secret-token" and found.store == "keyring"
    assert store.forget("http://a")
    assert memory_keyring.secrets == {}
    # CERO_CREDENTIAL_STORE=file wins over a working keyring
    assert CredentialStore(tmp_path / "f", "file").save("http://a", "t", {}).store == "file"


def test_no_keyring_means_the_file(tmp_path: Path) -> None:
    from keyring.backends import null

    previous = keyring.get_keyring()
    keyring.set_keyring(null.Keyring())  # type: ignore[no-untyped-call]
    try:
        assert CredentialStore(tmp_path).save("http://a", "t", {}).store == "file"
        with pytest.raises(CliError, match="no system keyring"):
            CredentialStore(tmp_path, "keyring").save("http://a", "t", {})
    finally:
        keyring.set_keyring(previous)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        [],
        ["login"],
        ["logout"],
        ["whoami"],
        ["chat"],
        ["watch"],
        ["conversations"],
        ["messages"],
        ["cancel"],
        ["models"],
        ["regenerate"],
        ["edit"],
        ["continue"],
        ["branches"],
        ["switch"],
    ):
        with pytest.raises(SystemExit) as done:
            parser().parse_args([*command, "--help"])
        assert done.value.code == 0
        assert "usage: cero" in capsys.readouterr().out


def test_the_client_uses_only_the_public_api() -> None:
    """No import of the server's or the actors' modules: the CLI is a client of the wire."""
    for path in CLIENT.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("server", "actors", "tests"), (path, name)
