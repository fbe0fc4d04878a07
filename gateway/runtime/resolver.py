"""Async RFC 3263 resolver: runs the queries the pure `TargetSelection` asks for.

dnspython's asyncio resolver does the lookups against the configured name servers
(`sip.dns_servers`, else the system's). Answers are cached for their TTL (bounded, with
a floor and a ceiling) so a call attempt does not wait for DNS; an expired entry is simply
looked up again on the next `resolve()`. A negative answer (NXDOMAIN, or no records of the
type) is cached as RFC 2308 says: for the SOA's MINIMUM (or its TTL, if lower) from the
authority section, clamped to `NEGATIVE_TTL_MIN`..`NEGATIVE_TTL_MAX`, else for
`NEGATIVE_TTL`; `TrunkAnswer.ttl` carries it, so a retry is not scheduled inside it. dnspython is imported by the first lookup: a
config whose trunks are IP literals (or that has none) never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.sip.dns import Answer, Naptr, Query, Srv, TargetSelection, is_ip
from gateway.sip.target import Target

if TYPE_CHECKING:
    import dns.resolver

log = logging.getLogger("branchline.dns")

MIN_TTL, MAX_TTL = 5.0, 3600.0
#: How long a negative answer is held: without an SOA, and the bounds on the SOA's value.
NEGATIVE_TTL, NEGATIVE_TTL_MIN, NEGATIVE_TTL_MAX = 5.0, 1.0, 30.0
MAX_CACHE = 512


@dataclass(frozen=True)
class TrunkAnswer:
    """Targets for one name, how long they hold, and whether a lookup got no answer.

    `ttl` is the seconds until the first of the answers used expires; `failed` is True when
    a name server did not answer (timeout, unreachable), as opposed to saying "no such name".
    """

    targets: tuple[Target, ...]
    ttl: float
    failed: bool


class SipResolver:
    """Resolves a trunk's host to ordered targets; one instance per daemon."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), *, timeout: float = 2.0,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self._nameservers = tuple(nameservers)
        self._timeout = timeout
        self._resolver: Any = None  # dnspython's, made by the first lookup (see _dns)
        self.rng = rng or random.Random()
        self._clock = clock  # monotonic seconds; the running loop's clock when None
        self._cache: OrderedDict[Query, tuple[float, Answer, bool]] = OrderedDict()
        self.stats = {"queries": 0, "cache_hits": 0, "failures": 0}

    async def resolve(self, host: str, *, port: int | None = None, transport: str | None = None,
                      secure: bool = False, server_name: str | None = None,
                      supported: tuple[str, ...] = ("udp", "tcp", "tls"),
                      families: tuple[str, ...] = ("A", "AAAA")) -> list[Target]:
        """Ordered targets for `host` (empty when nothing resolves)."""
        selection = TargetSelection(host, port, transport, secure, supported, server_name,
                                    families, rng=self.rng)
        return list((await self._run(selection)).targets)

    async def _run(self, selection: TargetSelection) -> TrunkAnswer:
        expires: float | None = None
        failed = False
        for _ in range(6):  # NAPTR -> SRV -> A/AAAA, plus slack
            needed = selection.needed()
            if not needed:
                break
            entries = await asyncio.gather(*(self._entry(q) for q in needed))
            for query, (until, records, broke) in zip(needed, entries, strict=True):
                selection.add_answer(query, records)
                expires = until if expires is None else min(expires, until)
                failed = failed or broke
        ttl = MAX_TTL if expires is None else max(expires - self._now(), 0.0)
        return TrunkAnswer(tuple(selection.targets()), ttl, failed)

    async def resolve_trunk(self, host: str, port: int | None, transport: str, *,
                            server_name: str | None = None) -> list[Target]:
        """A trunk's targets over its configured `transport`.

        With a port or an IP literal the transport is fixed (RFC 3263 4.1). Otherwise NAPTR
        is consulted but only records for `transport` are used; without them its SRV, then
        A/AAAA on the default port.
        """
        return list((await self.resolve_trunk_answer(host, port, transport,
                                                     server_name=server_name)).targets)

    async def resolve_trunk_answer(self, host: str, port: int | None, transport: str, *,
                                   server_name: str | None = None) -> TrunkAnswer:
        """`resolve_trunk` with how long the answer holds and whether a lookup failed.

        The trunk ACL uses this to re-resolve when the answer expires and to retry a name
        whose name servers did not answer.
        """
        if port is not None or is_ip(host):
            selection = TargetSelection(host, port, transport, False,
                                        server_name=server_name, rng=self.rng)
        else:
            selection = TargetSelection(host, None, None, transport == "tls", (transport,),
                                        server_name, rng=self.rng)
        return await self._run(selection)

    async def lookup(self, query: Query) -> Answer:
        """One query through the TTL cache; errors and NXDOMAIN give an empty answer."""
        return (await self._entry(query))[1]

    def _dns(self) -> Any:
        """dnspython's resolver, imported and set up on first use."""
        if self._resolver is None:
            import dns.asyncresolver

            resolver = dns.asyncresolver.Resolver(configure=not self._nameservers)
            if self._nameservers:
                resolver.nameservers = [host for host, _ in self._nameservers]
                ports = {port for _, port in self._nameservers}
                resolver.port = ports.pop() if len(ports) == 1 else 53
                if ports:
                    log.warning("name servers on different ports; using port %s for all",
                                resolver.port)
            resolver.lifetime = self._timeout
            resolver.timeout = self._timeout / 2
            self._resolver = resolver
        return self._resolver

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def _entry(self, query: Query) -> tuple[float, Answer, bool]:
        """(expiry, records, failed) for `query`, from the cache while it holds."""
        now = self._now()
        cached = self._cache.get(query)
        if cached is not None and cached[0] > now:
            self.stats["cache_hits"] += 1
            self._cache.move_to_end(query)
            return cached
        self.stats["queries"] += 1
        ttl = NEGATIVE_TTL
        records: Answer = []
        failed = False
        import dns.exception
        import dns.resolver

        try:
            answer = await self._dns().resolve(query.name, query.rtype, search=False)
            records = _convert(query.rtype, answer)
            ttl = min(max(float(answer.rrset.ttl if answer.rrset else 0), MIN_TTL), MAX_TTL)
        except dns.resolver.NXDOMAIN as exc:
            ttl = min((negative_ttl(r) for r in exc.kwargs.get("responses", {}).values()),
                      default=NEGATIVE_TTL)
        except dns.resolver.NoAnswer as exc:
            ttl = negative_ttl(exc.kwargs.get("response"))
        except (dns.exception.DNSException, OSError) as exc:
            self.stats["failures"] += 1
            log.info("DNS %s %s failed: %s", query.rtype, query.name, exc)
            ttl = MIN_TTL
            failed = True
        entry = (now + ttl, records, failed)
        self._cache[query] = entry
        self._cache.move_to_end(query)
        while len(self._cache) > MAX_CACHE:
            self._cache.popitem(last=False)
        return entry

    def forget(self) -> None:
        """Drop the cache (e.g. after a network change)."""
        self._cache.clear()


def negative_ttl(response: Any) -> float:
    """Seconds to hold a negative answer (RFC 2308 section 5), from its authority SOA.

    min(SOA TTL, SOA MINIMUM) clamped to NEGATIVE_TTL_MIN..NEGATIVE_TTL_MAX; NEGATIVE_TTL
    when the response carries no SOA (or there is no response).
    """
    import dns.rdatatype

    for rrset in getattr(response, "authority", None) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            ttl = min(rrset.ttl, min(r.minimum for r in rrset))
            return min(max(float(ttl), NEGATIVE_TTL_MIN), NEGATIVE_TTL_MAX)
    return NEGATIVE_TTL


def _convert(rtype: str, answer: dns.resolver.Answer) -> Answer:
    import dns.rdatatype

    if rtype == "NAPTR":
        return [
            Naptr(r.order, r.preference, r.flags.decode(), r.service.decode(),
                  r.regexp.decode(), r.replacement.to_text())
            for r in answer
        ]
    if rtype == "SRV":
        return [Srv(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]
    return [r.address for r in answer if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
