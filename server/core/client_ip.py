"""The client's address: the peer, or ``X-Forwarded-For`` only behind a trusted proxy."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from server.core.app_keys import SETTINGS
from server.core.header_text import clean_text

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=32)
def _networks(proxies: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in proxies)


def parse_ip(address: str) -> IpAddress | None:
    """The address, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) unwrapped to IPv4; ``None`` if
    it is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d, and the operator may have
    # listed either form: match both.
    forms: list[IpAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        forms.append(ip.ipv4_mapped)
    return any(form in net for form in forms for net in networks)


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
    # A client-written hop may be anything, stray non-UTF-8 bytes included.
    return clean_text(address, 64) or ""
