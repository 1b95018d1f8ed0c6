"""What every ``cero`` command is given: the server URL, the token store and the output.

:class:`Context` is built once per run by :func:`client.main.main`; commands (in
``client.main`` and ``client.branches``) are ``async def cmd(ctx) -> int``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any, cast

from client.api import Api
from client.credentials import Credential, CredentialStore, Store, config_dir
from client.errors import CliError, Exit
from client.interrupt import CtrlC
from client.output import Output

DEFAULT_SERVER = "http://localhost:3001"


def server_url(args: argparse.Namespace, environ: dict[str, str]) -> str:
    url = (
        getattr(args, "server", None)
        or environ.get("CERO_API_URL")
        or environ.get("CERO_URL")
        or DEFAULT_SERVER
    )
    return normalize_server(url)


def normalize_server(url: str) -> str:
    """``--server`` as typed → a base URL. Without a scheme, ``http://`` is assumed for
    this machine (``localhost``, ``127.x.y.z``, ``[::1]``) and ``https://`` for any other
    host: ``127.0.0.1:3201`` → ``http://127.0.0.1:3201``, ``cero.example`` →
    ``https://cero.example``."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep:
        rest = rest.rstrip("/")
        if scheme.lower() not in ("http", "https") or not rest:
            raise CliError(f"server URL {url!r} must be http(s)://HOST[:PORT]", Exit.USAGE)
        return f"{scheme.lower()}://{rest}"
    url = url.rstrip("/")
    if not url:
        raise CliError("the server URL is empty", Exit.USAGE)
    if url == "::1":  # a bare IPv6 loopback, no port
        url = "[::1]"
    return ("http://" if is_loopback(url) else "https://") + url


def is_loopback(authority: str) -> bool:
    """Whether ``host[:port][/path]`` names this machine."""
    hostport = authority.split("/", 1)[0].lower()
    if hostport.startswith("["):
        host = hostport[1:].split("]", 1)[0]
    else:
        host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    if host in ("localhost", "::1"):
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


class Context:
    """What every command needs: the server, the token store, the output."""

    def __init__(self, args: argparse.Namespace, environ: dict[str, str], out: Output) -> None:
        self.args = args
        self.environ = environ
        self.out = out
        #: Ctrl-C handlers (``cero chat`` cancels its answer with the first press).
        self.ctrl_c = CtrlC()
        self.server = server_url(args, environ)
        preference = environ.get("CERO_CREDENTIAL_STORE", "auto")
        if preference not in ("auto", "keyring", "file"):
            raise CliError("CERO_CREDENTIAL_STORE must be auto, keyring or file", Exit.USAGE)
        self.store = CredentialStore(config_dir(environ), cast(Store, preference))

    def credential(self) -> Credential:
        found = self.store.load(self.server)
        if found is None:
            raise CliError(f"not signed in to {self.server}; run `cero login`", Exit.AUTH)
        return found

    def api(self, token: str | None = None) -> Api:
        return Api(self.server, token)

    def signed_in(self) -> Api:
        return self.api(self.credential().token)


Command = Callable[[Context], Coroutine[Any, Any, int]]
#: Registers one subcommand: ``add(name, command, help)`` → its parser, to add arguments to.
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]
