"""Who is allowed to talk to the SIP edge, decided by source address alone.

Three answers, in this order:

1. **trunk**: the packet comes from one of a trunk's addresses (an IP, a CIDR, or a host
   name the caller has resolved), and from its port if one is pinned. Requests from a trunk
   are trusted without digest authentication, the way providers expect.
2. **authenticate**: not a trunk, but inside the local networks (or there is no local
   network list). The request must pass digest authentication as a local user.
3. **reject**: neither. On an Internet-facing box this is the scanner; the runtime refuses
   the request and logs an ``unknown-source`` security event.

Pure: DNS resolution is the caller's job (pass ``resolved``); rebuild the ACL with
`SourceAcl.with_resolved` when the answers change. Addresses listed by a trunk that the
caller could not resolve are kept in `SourceAcl.unresolved` so they can be reported.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Trust = Literal["trunk", "authenticate", "reject"]

#: RFC 1918, unique-local, link-local and loopback ranges: a sensible `local_networks` for a
#: box whose phones sit on the branch LAN.
PRIVATE_NETWORKS: Final[tuple[str, ...]] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)

_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?"
)
_LOOKS_NUMERIC_RE: Final = re.compile(r"[0-9.]+(/[0-9]+)?|.*:.*")


@dataclass(frozen=True)
class TrunkSource:
    """A trunk's name and the addresses it sends from (IPs, CIDRs or host names).

    `port`, when set, is the only source port trusted; leave it None for providers that
    send from many ports or from behind NAT.
    """

    name: str
    addresses: tuple[str, ...]
    port: int | None = None


@dataclass(frozen=True)
class AclDecision:
    """The answer for one source: `trust`, the `trunk` it matched, and a `reason` for logs."""

    trust: Trust
    reason: str
    trunk: str | None = None

    @property
    def is_trunk(self) -> bool:
        """Trusted as a trunk: no digest authentication is asked for."""
        return self.trust == "trunk"

    @property
    def must_authenticate(self) -> bool:
        """Allowed only after digest authentication as a local user."""
        return self.trust == "authenticate"

    @property
    def rejected(self) -> bool:
        """Refused outright: log an ``unknown-source`` event."""
        return self.trust == "reject"


@dataclass(frozen=True)
class _Rule:
    network: IPNetwork
    trunk: str
    port: int | None
    entry: str
    order: int


def _normalise_ip(ip: str) -> IPAddress:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"ip: expected an IPv4 or IPv6 address, got {ip!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_network(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{what}: expected an IP address or CIDR, got {text!r}") from None


def _host_key(host: str) -> str:
    return host.strip().rstrip(".").lower()


class SourceAcl:
    """Classifies a request's source address as trunk, local user, or unknown."""

    def __init__(
        self,
        trunks: Iterable[TrunkSource],
        resolved: Mapping[str, Iterable[str]] | None = None,
        local_networks: Iterable[str] | None = None,
    ) -> None:
        """`resolved` maps host names to the addresses the caller looked up.

        `local_networks` None means any non-trunk source may try to authenticate; an empty
        list means only trunks are served.
        """
        self.trunks: tuple[TrunkSource, ...] = tuple(trunks)
        resolved_by_host = {
            _host_key(host): tuple(addrs) for host, addrs in (resolved or {}).items()
        }
        rules: list[_Rule] = []
        unresolved: list[tuple[str, str]] = []
        for trunk in self.trunks:
            if trunk.port is not None and not 1 <= trunk.port <= 65535:
                raise ValueError(f"trunk {trunk.name!r} port: expected 1..65535, got {trunk.port}")
            for entry in trunk.addresses:
                for network in self._networks_for(trunk.name, entry, resolved_by_host):
                    rules.append(_Rule(network, trunk.name, trunk.port, entry, len(rules)))
                if not self._is_literal(entry) and not resolved_by_host.get(_host_key(entry)):
                    unresolved.append((trunk.name, entry))
        # Most specific network first, then configuration order.
        rules.sort(key=lambda r: (-r.network.prefixlen, r.order))
        self._rules: tuple[_Rule, ...] = tuple(rules)
        #: (trunk, host) pairs with no resolved address: these trunks may be unreachable.
        self.unresolved: tuple[tuple[str, str], ...] = tuple(unresolved)
        self.local_networks: tuple[IPNetwork, ...] | None = (
            None
            if local_networks is None
            else tuple(_parse_network(n, "local_networks entry") for n in local_networks)
        )
        self._resolved = resolved_by_host
        self._local_network_texts = (
            None if local_networks is None else tuple(str(n) for n in self.local_networks or ())
        )

    @staticmethod
    def _is_literal(entry: str) -> bool:
        return bool(_LOOKS_NUMERIC_RE.fullmatch(entry.strip()))

    @classmethod
    def _networks_for(
        cls, trunk: str, entry: str, resolved: Mapping[str, tuple[str, ...]]
    ) -> list[IPNetwork]:
        what = f"trunk {trunk!r} address {entry!r}"
        if cls._is_literal(entry):
            return [_parse_network(entry, what)]
        if not _HOSTNAME_RE.fullmatch(entry.strip()):
            raise ValueError(f"{what}: expected an IP address, CIDR or host name")
        return [
            ipaddress.ip_network(_normalise_ip(addr)) for addr in resolved.get(_host_key(entry), ())
        ]

    def with_resolved(self, resolved: Mapping[str, Iterable[str]]) -> SourceAcl:
        """The same ACL with fresh DNS answers (the old one keeps serving until swapped)."""
        return SourceAcl(self.trunks, resolved, self._local_network_texts)

    def with_trunks(self, trunks: Iterable[TrunkSource]) -> SourceAcl:
        """The same local networks with new trunk sources (e.g. freshly resolved addresses)."""
        return SourceAcl(trunks, None, self._local_network_texts)

    def check(self, ip: str, port: int, *, any_port: bool = False) -> AclDecision:
        """Classify a request from (ip, port); raises ValueError if ip is not an address.

        `any_port` ignores pinned trunk ports: over TCP and TLS a trunk connects from an
        ephemeral port, so only its address (and, with client certificates, TLS) names it.
        """
        addr = _normalise_ip(ip)
        wrong_port: _Rule | None = None
        for rule in self._rules:
            if addr.version != rule.network.version or addr not in rule.network:
                continue
            if rule.port is not None and rule.port != port and not any_port:
                wrong_port = wrong_port or rule
                continue
            via = "" if rule.entry == str(addr) else f" via {rule.entry}"
            return AclDecision(
                "trunk", f"address of trunk {rule.trunk}{via} ({rule.network})", rule.trunk
            )
        note = ""
        if wrong_port is not None:
            note = (
                f"address of trunk {wrong_port.trunk} but from port {port}, not {wrong_port.port}; "
            )
        if self.local_networks is None:
            return AclDecision("authenticate", f"{note}not a trunk: local user must authenticate")
        for network in self.local_networks:
            if addr.version == network.version and addr in network:
                return AclDecision(
                    "authenticate",
                    f"{note}not a trunk, in local network {network}: local user must authenticate",
                )
        return AclDecision("reject", f"{note}not a trunk and outside the local networks")
