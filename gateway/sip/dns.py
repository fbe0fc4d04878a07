"""RFC 3263 server location, sans-IO: DNS answers in, an ordered list of `Target`s out.

The selection never performs a lookup. It walks the RFC 3263 4.1/4.2 procedure against
the answers it has been given and reports which queries it still needs (`needed()`);
the runtime resolver answers them (an empty list for NXDOMAIN or an error) and asks
again until nothing is missing, then reads `targets()`. Tests hand it a complete table.

Procedure:
- a numeric IP host needs no lookup;
- an explicit port: A/AAAA of the host only;
- an explicit transport without port: SRV for that transport, else A/AAAA on the
  default port;
- otherwise NAPTR (SIP+D2U / SIP+D2T / SIPS+D2T, ordered by order then preference), each
  pointing at an SRV name; without usable NAPTR, SRV for each supported transport
  (_sip._udp first); without SRV, A/AAAA with UDP (TLS for sips) on the default port.
- SRV records are ordered by priority, then weighted random per RFC 2782 with an
  injected random source, so failover order is testable.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.sip.target import DEFAULT_PORTS, Target

NAPTR_SERVICES: dict[str, str] = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX: dict[str, str] = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
MAX_TARGETS = 16
"""Bound on the targets produced, so a hostile zone cannot make a huge failover list."""


@dataclass(frozen=True)
class Naptr:
    """A NAPTR record as plain data (RFC 3403)."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    """An SRV record as plain data (RFC 2782); target "." means "no service here"."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Query:
    """One DNS question the selection needs answered: rtype is NAPTR, SRV, A or AAAA."""

    name: str
    rtype: str


Answer = Sequence[Naptr] | Sequence[Srv] | Sequence[str]


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (brackets allowed), which needs no lookup."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782 order: ascending priority; within one, weighted random selection."""
    out: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        # Zero-weight records first, so they only win when nothing else is left.
        group.sort(key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


@dataclass
class TargetSelection:
    """One RFC 3263 lookup for `host` (with optional `port` and `transport`).

    `supported` lists the transports the gateway can use, in order of preference for the
    no-NAPTR fallback. `server_name` overrides the TLS name (default: the SIP domain, per
    RFC 5922, not the SRV target). `families` picks A and/or AAAA.
    """

    host: str
    port: int | None = None
    transport: str | None = None
    secure: bool = False
    supported: tuple[str, ...] = ("udp", "tcp", "tls")
    server_name: str | None = None
    families: tuple[str, ...] = ("A", "AAAA")
    rng: random.Random = field(default_factory=random.Random)
    answers: dict[Query, Answer] = field(default_factory=dict)
    _seeds: dict[str, int] = field(default_factory=dict, repr=False)

    def add_answer(self, query: Query, records: Answer) -> None:
        """Record the records for `query` (empty for NXDOMAIN, no data or a failed lookup)."""
        self.answers[Query(_norm(query.name), query.rtype)] = records

    def add_answers(self, table: Mapping[Query, Answer]) -> None:
        """Record several answers at once."""
        for query, records in table.items():
            self.add_answer(query, records)

    def needed(self) -> list[Query]:
        """Queries the selection needs before `targets()` is final (empty when done)."""
        missing: list[Query] = []
        self._walk(missing)
        return list(dict.fromkeys(missing))

    def targets(self) -> list[Target]:
        """The ordered targets from the answers so far (best first, at most MAX_TARGETS)."""
        return self._walk([])[:MAX_TARGETS]

    # -- the procedure

    def _get(self, query: Query, missing: list[Query]) -> Answer | None:
        key = Query(_norm(query.name), query.rtype)
        if key not in self.answers:
            missing.append(key)
            return None
        return self.answers[key]

    def _name_for(self, transport: str) -> str | None:
        if transport != "tls":
            return None
        return self.server_name or _norm(self.host)

    def _default_transport(self) -> str:
        return "tls" if self.secure else "udp"

    def _walk(self, missing: list[Query]) -> list[Target]:
        host = self.host.strip("[]")
        if is_ip(host):
            transport = self.transport or self._default_transport()
            port = self.port or DEFAULT_PORTS[transport]
            return [Target(transport, host, port, self._name_for(transport))]
        if self.port is not None:
            transport = self.transport or self._default_transport()
            return self._addresses(host, transport, self.port, missing)
        if self.transport is not None:
            srv = self._srv_targets(SRV_PREFIX[self.transport] + host, self.transport, missing)
            if srv is None:
                return []
            if srv:
                return srv
            return self._addresses(host, self.transport, DEFAULT_PORTS[self.transport], missing)
        naptr = self._get(Query(host, "NAPTR"), missing)
        if naptr is None:
            return []
        usable = self._usable_naptr(naptr)
        out: list[Target] = []
        if usable:
            for record, transport in usable:
                found = self._srv_targets(record.replacement, transport, missing)
                out += found or []
            if out or missing:
                return out
        for transport in self._fallback_transports():
            found = self._srv_targets(SRV_PREFIX[transport] + host, transport, missing)
            out += found or []
        if out or missing:
            return out
        transport = self._default_transport()
        return self._addresses(host, transport, DEFAULT_PORTS[transport], missing)

    def _fallback_transports(self) -> list[str]:
        if self.secure:
            return ["tls"] if "tls" in self.supported else []
        return list(self.supported)

    def _usable_naptr(self, records: Answer) -> list[tuple[Naptr, str]]:
        out: list[tuple[Naptr, str]] = []
        for record in records:
            if not isinstance(record, Naptr) or record.flags.lower() != "s":
                continue
            transport = NAPTR_SERVICES.get(record.service.upper())
            if transport is None or transport not in self.supported:
                continue
            if self.secure and transport != "tls":
                continue
            out.append((record, transport))
        out.sort(key=lambda pair: (pair[0].order, pair[0].preference))
        return out

    def _srv_targets(self, name: str, transport: str, missing: list[Query]) -> list[Target] | None:
        records = self._get(Query(name, "SRV"), missing)
        if records is None:
            return None
        srvs = [r for r in records if isinstance(r, Srv)]
        if any(_norm(r.target) == "" for r in srvs):
            return []  # "." : the service is decidedly not available (RFC 2782)
        # A fixed seed per name keeps one selection stable across needed()/targets() calls.
        ordered = order_srv(srvs, random.Random(self._seed(name)))
        out: list[Target] = []
        for record in ordered:
            out += self._addresses(_norm(record.target), transport, record.port, missing)
        return out

    def _seed(self, name: str) -> int:
        if name not in self._seeds:
            self._seeds[name] = self.rng.getrandbits(32)
        return self._seeds[name]

    def _addresses(
        self, host: str, transport: str, port: int, missing: list[Query]
    ) -> list[Target]:
        if is_ip(host):
            return [Target(transport, host, port, self._name_for(transport))]
        out: list[Target] = []
        for family in self.families:
            found = self._get(Query(host, family), missing)
            for address in found or []:
                if isinstance(address, str) and is_ip(address):
                    out.append(Target(transport, address, port, self._name_for(transport)))
        return out


def select_targets(
    host: str,
    answers: Mapping[Query, Answer],
    *,
    port: int | None = None,
    transport: str | None = None,
    secure: bool = False,
    supported: tuple[str, ...] = ("udp", "tcp", "tls"),
    server_name: str | None = None,
    rng: random.Random | None = None,
) -> list[Target]:
    """One-shot selection over a complete answer table (missing answers count as empty)."""
    selection = TargetSelection(
        host, port, transport, secure, supported, server_name, rng=rng or random.Random()
    )
    selection.add_answers(answers)
    for _ in range(8):  # each round can only add names reached through earlier answers
        needed = selection.needed()
        if not needed:
            break
        for query in needed:
            selection.add_answer(query, [])
    return selection.targets()
