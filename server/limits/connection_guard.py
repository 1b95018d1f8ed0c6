"""How many TCP connections the server holds, in all and per client address.

Every open connection costs a file descriptor, and the process has a fixed number of them
(``RLIMIT_NOFILE``, often 1,024 soft): past it ``accept()`` fails and the server stops
answering anyone, ``/healthz`` included. So start-up raises the soft limit to the hard one
(:func:`raise_nofile_limit`), and the guard keeps client connections below it with headroom
for the database, the model's HTTP client and log files (:func:`connection_capacity`).

Admission is decided when a connection is accepted (:meth:`ConnectionGuard.admit`):

- ``ADMIT`` — counted until it closes;
- ``RESERVE`` — the total cap is reached, but a few reserved slots let probes through: such
  a connection answers ``/``, ``/healthz`` and ``/readyz`` and ``503`` for anything else,
  once, then closes (so a load balancer still sees the process alive); one address holds
  at most one reserved slot, so one flooding client cannot take them all;
- ``REFUSE_IP`` / ``REFUSE_FULL`` — answered at once with ``429`` / ``503`` JSON and closed.

Per-address counting uses :func:`server.limits.rate_limit.rate_key` (IPv6 per ``/64``);
peers listed in ``CERO_TRUSTED_PROXIES`` only count toward the total. Pure bookkeeping: the
protocol that applies it lives in :mod:`server.http.protocol`.
"""

from __future__ import annotations

import enum
import ipaddress
import resource
from collections.abc import Callable
from dataclasses import dataclass

from server.limits.rate_limit import rate_key
from state.counting import InFlight

# No hard limit: do not ask for the impossible, a generous soft limit is enough.
_UNLIMITED_TARGET = 1 << 20
# At least this many client connections, whatever the arithmetic says.
MIN_CONNECTIONS = 8


class Admission(enum.Enum):
    ADMIT = "admit"
    RESERVE = "reserve"
    REFUSE_IP = "refuse_ip"
    REFUSE_FULL = "refuse_full"


@dataclass(frozen=True, slots=True)
class NofileLimits:
    before: int
    soft: int
    hard: int


def raise_nofile_limit() -> NofileLimits:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return what it was and is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _UNLIMITED_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # e.g. a platform cap below the reported hard limit
            return NofileLimits(before=soft, soft=soft, hard=hard)
        return NofileLimits(before=soft, soft=target, hard=hard)
    return NofileLimits(before=soft, soft=soft, hard=hard)


def connection_capacity(max_connections: int, nofile: int, headroom: int, reserve: int) -> int:
    """Client connections to admit: the setting, clamped below the open-files limit minus
    ``headroom`` (database, model, logs) and the reserved slots (each a descriptor too)."""
    return max(MIN_CONNECTIONS, min(max_connections, nofile - headroom - 2 * reserve))


class ConnectionGuard:
    def __init__(
        self,
        *,
        max_total: int,
        max_per_ip: int,
        reserve: int,
        exempt: Callable[[str], bool] = lambda address: False,
    ) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.reserve = reserve
        self._exempt = exempt
        self.total = 0
        self.reserved = 0
        self.lingering = 0
        #: Metrics hook: a connection refused, by limit (``connections_per_ip``: 429,
        #: ``connections``: 503 over capacity, ``slow_body``: 408 or closed, body too slow).
        self.on_refusal: Callable[[str], None] | None = None
        self._per_ip = InFlight()
        self._reserved_by: set[str] = set()  # one reserved slot per address at a time

    def key(self, address: str) -> str | None:
        """What ``address`` counts against, or ``None`` when it has no per-address cap."""
        if self._exempt(address):
            return None
        return rate_key(address)

    def admit(self, address: str) -> Admission:
        key = self.key(address)
        if key is not None and self._per_ip[key] >= self.max_per_ip:
            return Admission.REFUSE_IP
        if self.total < self.max_total:
            self.total += 1
            if key is not None:
                self._per_ip.add(key)
            return Admission.ADMIT
        if self.reserved < self.reserve and (key is None or key not in self._reserved_by):
            self.reserved += 1
            if key is not None:
                self._reserved_by.add(key)
            return Admission.RESERVE
        return Admission.REFUSE_FULL

    def release(self, address: str, admission: Admission) -> None:
        if admission is Admission.RESERVE:
            self.reserved -= 1
            key = self.key(address)
            if key is not None:
                self._reserved_by.discard(key)
            return
        if admission is not Admission.ADMIT:
            return
        self.total -= 1
        key = self.key(address)
        if key is not None:
            self._per_ip.remove(key)

    def per_ip(self, address: str) -> int:
        key = self.key(address)
        return 0 if key is None else self._per_ip[key]


def exempt_networks(networks: list[str]) -> Callable[[str], bool]:
    """A predicate: is the address inside one of ``networks`` (trusted proxies)?"""
    parsed = [ipaddress.ip_network(item, strict=False) for item in networks]

    def exempt(address: str) -> bool:
        if not parsed:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        forms = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        return any(form in net for form in forms for net in parsed)

    return exempt
