"""The client's address: the peer, or ``X-Forwarded-For`` only behind a trusted proxy."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from server.state import SETTINGS

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def _networks(proxies: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in proxies)


def _trusted(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: web.Request) -> str:
    """Walk ``X-Forwarded-For`` from the right while the hop is a trusted proxy."""
    peer = request.remote or ""
    networks = _networks(tuple(request.app[SETTINGS].trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [
        part.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for part in header.split(",")
        if part.strip()
    ]
    address = peer
    for hop in reversed(hops):
        address = hop
        if not _trusted(hop, networks):
            break
    return address[:64]
