"""Trunk trust kept fresh from DNS: the runtime adapter with the real resolver and edge.

A loopback authoritative server (tests/integration/dns_server.py) answers; the clock is
fake, shared by the resolver's cache and the adapter, and `refresh()` is driven by hand.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.config.loader import load_config_text
from gateway.config.schema import Config
from gateway.runtime.edge import build_edge
from gateway.runtime.resolver import SipResolver
from gateway.runtime.trunk_trust import TrunkTrust, trunk_limits
from gateway.security.trunk_addresses import RefreshPolicy


def _load_dns_server() -> ModuleType:
    path = Path(__file__).parents[1] / "integration" / "dns_server.py"
    spec = importlib.util.spec_from_file_location("branchline_test_dns_server_trust", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SRV_RECORDS = {
    ("_sip._udp.carrier.test", "SRV"): ["10 0 5071 a.carrier.test.", "20 0 5073 b.carrier.test."],
    ("a.carrier.test", "A"): ["127.0.0.21"],
    ("b.carrier.test", "A"): ["127.0.0.22"],
}
POLICY = RefreshPolicy(min_ttl=10.0, max_ttl=3600.0, retry_min=1.0, retry_max=8.0)


def config(registrar: str = "carrier.test", extra: str = "") -> Config:
    """`extra` is more keys for the trunk, as YAML flow-mapping entries."""
    text = "\n".join([
        "gateway: {name: trust-gw, state_dir: /tmp/x}",
        "sip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}",
        "trunks:",
        f"  - {{name: main, registrar: '{registrar}'{', ' + extra if extra else ''}}}",
        "lines:",
        '  - {name: "1", backend: sim, number: "101"}',
        "",
    ])
    return load_config_text(text, route_probe=lambda toward: None)


@pytest.fixture
def dns() -> Iterator[Any]:
    srv = _load_dns_server().DnsTestServer(SRV_RECORDS, ttl=60).start()
    yield srv
    srv.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trusted(trust: TrunkTrust, ip: str, port: int) -> bool:
    return trust.edge.acl.check(ip, port).is_trunk


def test_srv_targets_are_trusted_on_their_own_ports(dns: Any) -> None:
    async def run() -> None:
        clock = Clock()
        cfg = config()
        edge = build_edge(cfg)
        resolver = SipResolver([dns.address], clock=clock, timeout=1.0)
        trust = TrunkTrust(cfg.trunks, edge, resolver, asyncio.get_running_loop(),
                           policy=POLICY, clock=clock)
        await trust.start()
        try:
            assert trusted(trust, "127.0.0.21", 5071)
            assert trusted(trust, "127.0.0.22", 5073)
            assert edge.acl.check("127.0.0.21", 5071).trunk == "main"
            assert not trusted(trust, "127.0.0.21", 5060)  # pinned to the SRV port
            assert ("_sip._udp.carrier.test", "SRV") in dns.queries
        finally:
            trust.stop()

    asyncio.run(run())


def test_reresolution_on_ttl_expiry_drops_an_address_no_longer_returned(dns: Any) -> None:
    async def run() -> None:
        clock = Clock()
        cfg = config()
        edge = build_edge(cfg)
        resolver = SipResolver([dns.address], clock=clock, timeout=1.0)
        trust = TrunkTrust(cfg.trunks, edge, resolver, asyncio.get_running_loop(),
                           policy=POLICY, clock=clock)
        await trust.start()
        try:
            # The "no NAPTR" answer is held 5 s (no SOA in it), so the name is asked again
            # after the policy's min_ttl (10 s); the SRV and A records keep their 60 s TTL.
            assert trust.book.next_deadline() == clock.now + 10.0
            dns.set_records({
                ("_sip._udp.carrier.test", "SRV"): ["10 0 5071 a.carrier.test."],
                ("a.carrier.test", "A"): ["127.0.0.23"],
            })
            clock.now += 10.0
            await trust.refresh()  # NAPTR asked again; SRV and A still cached
            assert trust.book.next_deadline() == clock.now + 10.0
            assert trusted(trust, "127.0.0.22", 5073)
            clock.now += 51.0
            await trust.refresh()
            assert not trusted(trust, "127.0.0.22", 5073)
            assert not trusted(trust, "127.0.0.21", 5071)
            assert trusted(trust, "127.0.0.23", 5071)
        finally:
            trust.stop()

    asyncio.run(run())


def test_trunk_whose_dns_failed_at_start_is_trusted_once_dns_answers() -> None:
    dns_mod = _load_dns_server()
    server = dns_mod.DnsTestServer(SRV_RECORDS, ttl=60)  # bound, but not answering yet

    async def run() -> None:
        clock = Clock()
        cfg = config()
        edge = build_edge(cfg)
        resolver = SipResolver([server.address], clock=clock, timeout=0.4)
        trust = TrunkTrust(cfg.trunks, edge, resolver, asyncio.get_running_loop(),
                           policy=POLICY, clock=clock)
        await trust.start()
        try:
            assert not trusted(trust, "127.0.0.21", 5071)
            assert trust.book.failures(trust.book.hosts[0]) == 1
            server.start()
            clock.now += 10.0  # past the retry and the resolver's failure cache
            await trust.refresh()
            assert trusted(trust, "127.0.0.21", 5071)
            assert trust.book.failures(trust.book.hosts[0]) == 0
        finally:
            trust.stop()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_the_timer_refreshes_without_being_driven() -> None:
    """With the loop's own clock, a failed start is retried by the armed timer alone."""
    dns_mod = _load_dns_server()
    server = dns_mod.DnsTestServer(SRV_RECORDS, ttl=60)

    async def run() -> None:
        cfg = config()
        edge = build_edge(cfg)
        resolver = SipResolver([server.address], timeout=0.2)
        policy = RefreshPolicy(min_ttl=10.0, retry_min=0.2, retry_max=0.4)
        trust = TrunkTrust(cfg.trunks, edge, resolver, asyncio.get_running_loop(),
                           policy=policy)
        await trust.start()
        try:
            assert not trusted(trust, "127.0.0.21", 5071)
            resolver.forget()  # the resolver caches failures for 5 s; don't wait for that
            server.start()
            for _ in range(100):
                if trusted(trust, "127.0.0.21", 5071):
                    break
                resolver.forget()
                await asyncio.sleep(0.05)
            assert trusted(trust, "127.0.0.21", 5071)
        finally:
            trust.stop()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_ip_literal_trunks_need_no_lookup_and_config_limits_reach_the_edge() -> None:
    cfg = config("127.0.0.9:5090", extra="rate_limit: {requests_per_second: 50, "
                 "request_burst: 200, calls_per_second: 4, call_burst: 8}")
    limits = trunk_limits(cfg.trunks)
    assert limits["main"].request.rate == 50 and limits["main"].request.burst == 200
    assert limits["main"].call.rate == 4 and limits["main"].call.burst == 8
    edge = build_edge(cfg, trunk_limits=limits)
    assert edge.acl.check("127.0.0.9", 5090).is_trunk
    assert edge.trunk_limits["main"].call.burst == 8


def test_a_name_that_did_not_exist_is_found_by_the_next_scheduled_retry() -> None:
    """NXDOMAIN at start, then the records appear: the first retry (5 s) reaches DNS.

    The resolver used to hold every negative answer 30 s, so the retries at 5 and 10 s
    only met its cache (a registration came 34 s after DNS answered).
    """
    server = _load_dns_server().DnsTestServer({}, ttl=60).start()

    async def run() -> None:
        clock = Clock()
        cfg = config()
        resolver = SipResolver([server.address], clock=clock, timeout=1.0)
        trust = TrunkTrust(cfg.trunks, build_edge(cfg), resolver, asyncio.get_running_loop(),
                           policy=RefreshPolicy(retry_min=5.0, retry_max=60.0), clock=clock)
        await trust.start()
        try:
            host = trust.book.hosts[0]
            assert not trusted(trust, "127.0.0.21", 5071)
            assert trust.targets_for(cfg.trunks[0], cfg.trunks[0].registrar) == ()
            server.set_records(SRV_RECORDS)
            retry = trust.book.next_deadline()
            assert retry == clock.now + 5.0
            clock.now = retry
            await trust.refresh()
            assert trusted(trust, "127.0.0.21", 5071)
            assert trust.book.failures(host) == 0
            [first, *_] = trust.targets_for(cfg.trunks[0], cfg.trunks[0].registrar) or ()
            assert (first.host, first.port) == ("127.0.0.21", 5071)
        finally:
            trust.stop()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_a_negative_answer_s_soa_minimum_sets_when_the_name_is_asked_again() -> None:
    """RFC 2308: the zone's SOA MINIMUM (20 s here) holds "no such name"; the retry waits."""
    server = _load_dns_server().DnsTestServer({}, ttl=60, negative_ttl=20).start()

    async def run() -> None:
        clock = Clock()
        cfg = config()
        resolver = SipResolver([server.address], clock=clock, timeout=1.0)
        trust = TrunkTrust(cfg.trunks, build_edge(cfg), resolver, asyncio.get_running_loop(),
                           policy=RefreshPolicy(retry_min=5.0, retry_max=60.0), clock=clock)
        await trust.start()
        try:
            assert trust.book.next_deadline() == clock.now + 20.0
            server.set_records(SRV_RECORDS)
            asked = len(server.queries)
            clock.now += 20.0
            await trust.refresh()
            assert len(server.queries) > asked  # the cache let it through
            assert trusted(trust, "127.0.0.21", 5071)
        finally:
            trust.stop()

    try:
        asyncio.run(run())
    finally:
        server.stop()
