"""Which device-flow clients a server accepts, and how the ``/device`` page names them.

A ``client_id`` is whatever the device sent: an attacker's script can call itself anything.
So only the ids in ``CERO_DEVICE_CLIENT_IDS`` are accepted (default: the Cero CLIs below),
the human name shown to the approving user comes from this table, never from the request,
and ``*`` (the operator's explicit opt-out) admits any id but marks it unverified.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``CERO_DEVICE_CLIENT_IDS=*``: any client id is accepted, shown as unverified.
ANY_CLIENT = "*"

#: The ids the Cero CLIs send, with the fixed name the page shows for each.
KNOWN_CLIENTS: dict[str, str] = {
    # This project's CLI (client/device_login.py).
    "cero-cli": "Cero CLI",
    # The original TypeScript CLI (cerocode, apps/cero-cli: CLI_UNIQUE_ID).
    "cero-cli-TC6BiqEw1BHvYEZf13kBbGjQBGSoBv4i": "Cero CLI",
}


def default_client_ids() -> list[str]:
    return list(KNOWN_CLIENTS)


def admitted(client_id: str, allowed: list[str]) -> bool:
    """May ``client_id`` ask for a code on a server configured with ``allowed``?"""
    return client_id in allowed or ANY_CLIENT in allowed


@dataclass(frozen=True, slots=True)
class ClientLabel:
    """How a code's client is shown: ``name`` is fixed text of ours (``None``: show the raw
    id, escaped); ``verified`` is false for an id only the ``*`` opt-out admitted."""

    name: str | None
    verified: bool


def label(client_id: str, allowed: list[str]) -> ClientLabel:
    """A known id keeps its fixed name (also under ``*``); an id the operator listed is
    verified but has no name of ours; any other id is unverified."""
    name = KNOWN_CLIENTS.get(client_id)
    return ClientLabel(name=name, verified=name is not None or client_id in allowed)
