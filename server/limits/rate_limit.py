"""What per-address limits count against: :func:`rate_key`, an IPv4 address, or an IPv6
address's ``/64`` (one subscriber typically holds a whole /64, so per-address counting
would be no limit at all).

The limits themselves (wrong codes, moving windows, streams per address) are interfaces
with a memory and a Redis implementation: :mod:`state` and :mod:`cluster.state`.
"""

from __future__ import annotations

import ipaddress

from server.core.client_ip import parse_ip

_IPV6_PREFIX = 64


def rate_key(address: str) -> str:
    """What wrong codes are counted against: the IPv4 address (IPv4-mapped IPv6 unwrapped),
    the ``/64`` network of an IPv6 address, or the string itself when it is no address."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False))
    return str(ip)
