"""A tiny authoritative DNS server on loopback for RFC 3263 tests (NAPTR, SRV, A, AAAA).

Records are zone-file rdata text keyed by (name, type), e.g.
`{("_sip._udp.trunk.test", "SRV"): ["10 0 5071 a.trunk.test."]}`. Unknown names get
NXDOMAIN; known names without that type get an empty NOERROR answer. Runs in a thread.

`negative_ttl` puts an SOA record in the authority section of those negative answers, whose
MINIMUM (and TTL) is how long a resolver may cache them (RFC 2308); without it there is none.
`silent = True` makes a running server log queries but answer nothing (the WAN is down).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = Mapping[tuple[str, str], Sequence[str]]


class DnsTestServer:
    """Answers UDP queries on 127.0.0.1 from a fixed record table; `queries` logs them."""

    def __init__(self, records: Records, *, ttl: int = 60, host: str = "127.0.0.1",
                 port: int = 0, negative_ttl: int | None = None) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.silent = False
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], list[str]] = {}
        self.set_records(records)
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.2)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-test-server", daemon=True)

    def set_records(self, records: Records) -> None:
        """Replace the whole table."""
        with self._lock:
            self._records = {
                (name.rstrip(".").lower(), rtype.upper()): list(values)
                for (name, rtype), values in records.items()
            }

    def start(self) -> DnsTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
                if self.silent:
                    with self._lock:
                        self.queries.extend(
                            (q.name.to_text().rstrip(".").lower(),
                             dns.rdatatype.to_text(q.rdtype)) for q in query.question)
                    continue
                reply = self._answer(query)
            except Exception:
                continue  # not a query we can parse: stay silent like a real server
            try:
                self._sock.sendto(reply.to_wire(), peer)
            except OSError:
                return

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        if not query.question:
            reply.set_rcode(dns.rcode.FORMERR)
            return reply
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rtype))
            known = any(n == name for n, _ in self._records)
            values = self._records.get((name, rtype), [])
        if not known:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(reply, name)
            return reply
        if not values:
            self._add_soa(reply, name)
        if values:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
            rrset.update_ttl(self.ttl)
            for text in values:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, text),
                          self.ttl)
            reply.answer.append(rrset)
        return reply

    def _add_soa(self, reply: dns.message.Message, name: str) -> None:
        """RFC 2308: the zone's SOA beside a negative answer (the zone is the name's parent)."""
        if self.negative_ttl is None:
            return
        zone = dns.name.from_text(name.split(".", 1)[-1] if "." in name else name)
        rrset = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.add(dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.SOA,
            f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {self.negative_ttl}"),
            self.negative_ttl)
        reply.authority.append(rrset)
