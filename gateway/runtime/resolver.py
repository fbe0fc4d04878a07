"""Async RFC 3263 resolver: runs the queries the pure `TargetSelection` asks for.

dnspython's asyncio resolver does the lookups against the configured name servers
(`sip.dns_servers`, else the system's). Answers are cached for their TTL (bounded, with
a floor and a ceiling) so a call attempt does not wait for DNS; an expired entry is simply
looked up again on the next `resolve()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from gateway.sip.dns import Answer, Naptr, Query, Srv, TargetSelection, is_ip
from gateway.sip.target import Target

log = logging.getLogger("branchline.dns")

MIN_TTL, MAX_TTL, NEGATIVE_TTL = 5.0, 3600.0, 30.0
MAX_CACHE = 512


class SipResolver:
    """Resolves a trunk's host to ordered targets; one instance per daemon."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), *, timeout: float = 2.0,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [host for host, _ in nameservers]
            ports = {port for _, port in nameservers}
            self._resolver.port = ports.pop() if len(ports) == 1 else 53
            if ports:
                log.warning("name servers on different ports; using port %s for all",
                            self._resolver.port)
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout / 2
        self.rng = rng or random.Random()
        self._clock = clock  # monotonic seconds; the running loop's clock when None
        self._cache: OrderedDict[Query, tuple[float, Answer]] = OrderedDict()
        self.stats = {"queries": 0, "cache_hits": 0, "failures": 0}

    async def resolve(self, host: str, *, port: int | None = None, transport: str | None = None,
                      secure: bool = False, server_name: str | None = None,
                      supported: tuple[str, ...] = ("udp", "tcp", "tls"),
                      families: tuple[str, ...] = ("A", "AAAA")) -> list[Target]:
        """Ordered targets for `host` (empty when nothing resolves)."""
        selection = TargetSelection(host, port, transport, secure, supported, server_name,
                                    families, rng=self.rng)
        for _ in range(6):  # NAPTR -> SRV -> A/AAAA, plus slack
            needed = selection.needed()
            if not needed:
                break
            answers = await asyncio.gather(*(self.lookup(q) for q in needed))
            for query, records in zip(needed, answers, strict=True):
                selection.add_answer(query, records)
        return selection.targets()

    async def resolve_trunk(self, host: str, port: int | None, transport: str, *,
                            server_name: str | None = None) -> list[Target]:
        """A trunk's targets over its configured `transport`.

        With a port or an IP literal the transport is fixed (RFC 3263 4.1). Otherwise NAPTR
        is consulted but only records for `transport` are used; without them its SRV, then
        A/AAAA on the default port.
        """
        if port is not None or is_ip(host):
            return await self.resolve(host, port=port, transport=transport,
                                      server_name=server_name)
        return await self.resolve(host, secure=transport == "tls", supported=(transport,),
                                  server_name=server_name)

    async def lookup(self, query: Query) -> Answer:
        """One query through the TTL cache; errors and NXDOMAIN give an empty answer."""
        now = self._clock() if self._clock else asyncio.get_running_loop().time()
        cached = self._cache.get(query)
        if cached is not None and cached[0] > now:
            self.stats["cache_hits"] += 1
            self._cache.move_to_end(query)
            return cached[1]
        self.stats["queries"] += 1
        ttl = NEGATIVE_TTL
        records: Answer = []
        try:
            answer = await self._resolver.resolve(query.name, query.rtype, search=False)
            records = _convert(query.rtype, answer)
            ttl = min(max(float(answer.rrset.ttl if answer.rrset else 0), MIN_TTL), MAX_TTL)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
        except (dns.exception.DNSException, OSError) as exc:
            self.stats["failures"] += 1
            log.info("DNS %s %s failed: %s", query.rtype, query.name, exc)
            ttl = MIN_TTL
        self._cache[query] = (now + ttl, records)
        self._cache.move_to_end(query)
        while len(self._cache) > MAX_CACHE:
            self._cache.popitem(last=False)
        return records

    def forget(self) -> None:
        """Drop the cache (e.g. after a network change)."""
        self._cache.clear()


def _convert(rtype: str, answer: dns.resolver.Answer) -> Answer:
    if rtype == "NAPTR":
        return [
            Naptr(r.order, r.preference, r.flags.decode(), r.service.decode(),
                  r.regexp.decode(), r.replacement.to_text())
            for r in answer
        ]
    if rtype == "SRV":
        return [Srv(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]
    return [r.address for r in answer if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
