"""Opaque ids minted by the actors (generation ids, log epochs).

Never starting with ``-``: ids are typed as command-line arguments (``cero messages <id>``,
``cero cancel --generation <id>``, ``--after <epoch>:<seq>``), where argparse takes a
leading ``-`` for an option (a CI run failed on it: a conversation id ``-tv0M…``). The first
character is one of 63 values instead of 64: 143.98 random bits instead of 144.
"""

from __future__ import annotations

import secrets


def opaque_id(nbytes: int = 18) -> str:
    """URL-safe random text of ``nbytes`` bytes (24 characters for 18), never starting
    with ``-``."""
    while True:
        ident = secrets.token_urlsafe(nbytes)
        if not ident.startswith("-"):
            return ident
