"""Which addresses each trunk sends from, kept fresh from DNS: the schedule, without the I/O.

A trunk named by host name is trusted by the addresses that name resolves to (RFC 3263:
NAPTR, SRV, then A/AAAA), and those change. `TrunkAddressBook` decides when each name is
looked up again and what is trusted meanwhile; the runtime does the lookups and feeds the
answers back. Pure: ``now`` comes in, the next deadline goes out.

- **An answer** is kept for its DNS TTL, clamped to `RefreshPolicy.min_ttl` and
  `max_ttl` so a zero TTL cannot make us query in a loop, nor a week-long one pin a
  provider's old address. When it expires the name is looked up again, and an address no
  longer returned stops being trusted.
- **A lookup that failed** (no answer from the name servers: the WAN is down) is retried
  with exponential backoff from `retry_min` up to `retry_max`. What the name resolved to
  before stays trusted for up to `max_stale` past its TTL (RFC 8767's serve-stale), so a
  DNS outage does not cut off a trunk that still works; a trunk that never resolved is
  trusted as soon as a retry brings an answer.
- **An empty answer** (NXDOMAIN, no records) drops the name's addresses at once and is
  retried with the same backoff, but never before the answer's own (RFC 2308 negative)
  TTL has run out, up to `retry_max`: a retry inside it would only meet the cached "no".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

#: (IP address, port) a trunk host resolved to: an RFC 3263 target's address.
SourceAddress = tuple[str, int]


@dataclass(frozen=True)
class TrunkHost:
    """One configured name to look up for a trunk: its registrar or its proxy.

    `port` is None when the config gave none, so SRV decides (RFC 3263 4.2); `transport`
    is the trunk's, which picks the SRV records consulted.
    """

    trunk: str
    host: str
    port: int | None
    transport: str


@dataclass(frozen=True)
class RefreshPolicy:
    """Bounds on how long answers are kept and how fast failed lookups are retried (s)."""

    min_ttl: float = 30.0
    max_ttl: float = 3600.0
    retry_min: float = 5.0
    retry_max: float = 60.0
    max_stale: float = 86400.0

    def __post_init__(self) -> None:
        if not 0 < self.min_ttl <= self.max_ttl:
            raise ValueError(f"min_ttl/max_ttl: expected 0 < min <= max, got "
                             f"{self.min_ttl}/{self.max_ttl}")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError(f"retry_min/retry_max: expected 0 < min <= max, got "
                             f"{self.retry_min}/{self.retry_max}")
        if self.max_stale < 0:
            raise ValueError(f"max_stale: expected seconds >= 0, got {self.max_stale}")

    def keep_for(self, ttl: float) -> float:
        """Seconds an answer with this DNS TTL is used before the name is asked again."""
        return min(max(ttl, self.min_ttl), self.max_ttl)

    def retry_after(self, failures: int) -> float:
        """Backoff after the `failures`-th failed lookup in a row (1, 2, ...)."""
        return min(self.retry_min * 2.0 ** max(failures - 1, 0), self.retry_max)


@dataclass
class _Entry:
    addresses: tuple[SourceAddress, ...] = ()
    due: float = 0.0
    expires: float = 0.0  # when `addresses` stop being fresh
    failures: int = 0
    pending: bool = False


class TrunkAddressBook:
    """The addresses each trunk host resolved to, and when each is looked up next."""

    def __init__(self, hosts: Iterable[TrunkHost], policy: RefreshPolicy | None = None,
                 now: float = 0.0) -> None:
        """Every host is due at `now`: nothing is trusted by name before its first answer."""
        self.policy = policy or RefreshPolicy()
        self._entries: dict[TrunkHost, _Entry] = {h: _Entry(due=now) for h in hosts}

    @property
    def hosts(self) -> tuple[TrunkHost, ...]:
        """The names this book looks after, in configuration order."""
        return tuple(self._entries)

    def due(self, now: float) -> list[TrunkHost]:
        """Hosts to look up now; each stays pending until `answered` or `failed` is called."""
        out: list[TrunkHost] = []
        for host, entry in self._entries.items():
            if not entry.pending and entry.due <= now:
                entry.pending = True
                out.append(host)
        return out

    def answered(self, host: TrunkHost, addresses: Iterable[SourceAddress], ttl: float,
                 now: float) -> bool:
        """The name servers answered for `host`; True when its trusted addresses changed.

        An empty answer (the name or its records are gone) untrusts the host at once and
        is retried with backoff, like a failure.
        """
        entry = self._entries[host]
        entry.pending = False
        fresh = tuple(dict.fromkeys(addresses))
        changed = fresh != entry.addresses
        entry.addresses = fresh
        if fresh:
            entry.failures = 0
            entry.expires = entry.due = now + self.policy.keep_for(ttl)
        else:
            entry.failures += 1
            entry.expires = now
            entry.due = now + max(self.policy.retry_after(entry.failures),
                                  min(ttl, self.policy.retry_max))
        return changed

    def failed(self, host: TrunkHost, now: float) -> bool:
        """No answer for `host` (timeout, unreachable name server); True if trust changed.

        The last answer is kept until `max_stale` past its expiry, then dropped.
        """
        entry = self._entries[host]
        entry.pending = False
        entry.failures += 1
        entry.due = now + self.policy.retry_after(entry.failures)
        if entry.addresses and now >= entry.expires + self.policy.max_stale:
            entry.addresses = ()
            return True
        return False

    def next_deadline(self) -> float | None:
        """When `due` will next return something (None while every lookup is pending)."""
        waiting = [e.due for e in self._entries.values() if not e.pending]
        return min(waiting) if waiting else None

    def addresses(self) -> dict[TrunkHost, tuple[SourceAddress, ...]]:
        """What each host is trusted as now (an empty tuple before its first answer)."""
        return {host: entry.addresses for host, entry in self._entries.items()}

    def failures(self, host: TrunkHost) -> int:
        """Failed or empty lookups in a row for `host` (0 once it answers)."""
        return self._entries[host].failures


class _HostPort(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def lookup_port(self) -> int | None: ...


class _Trunk(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def registrar(self) -> _HostPort: ...
    @property
    def proxy(self) -> _HostPort: ...
    @property
    def transport(self) -> str: ...


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address (brackets allowed): trusted as written, never looked up."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def trunk_hosts(trunks: Iterable[_Trunk]) -> tuple[TrunkHost, ...]:
    """The names the trunks' registrars and proxies need looked up (IP literals need none)."""
    out: dict[TrunkHost, None] = {}
    for trunk in trunks:
        for hp in (trunk.registrar, trunk.proxy):
            if not is_ip_literal(hp.host):
                out[TrunkHost(trunk.name, hp.host, hp.lookup_port, trunk.transport)] = None
    return tuple(out)


def by_trunk(addresses: Mapping[TrunkHost, Iterable[SourceAddress]]
             ) -> dict[str, list[SourceAddress]]:
    """The resolved addresses grouped by trunk name, each once, in lookup order."""
    out: dict[str, list[SourceAddress]] = {}
    for host, addrs in addresses.items():
        bucket = out.setdefault(host.trunk, [])
        bucket += [a for a in addrs if a not in bucket]
    return out
