"""The async RFC 3263 resolver against a loopback authoritative server."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.runtime.resolver import SipResolver
from gateway.sip.dns import Query, Srv
from gateway.sip.target import Target


def _load_dns_server() -> ModuleType:
    path = Path(__file__).parents[1] / "integration" / "dns_server.py"
    spec = importlib.util.spec_from_file_location("branchline_test_dns_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = {
    ("trunk.test", "NAPTR"): [
        '10 10 "s" "SIP+D2T" "" _sip._tcp.trunk.test.',
        '20 10 "s" "SIP+D2U" "" _sip._udp.trunk.test.',
    ],
    ("_sip._tcp.trunk.test", "SRV"): ["10 0 5072 b.trunk.test."],
    ("_sip._udp.trunk.test", "SRV"): ["10 0 5071 a.trunk.test.", "20 0 5073 b.trunk.test."],
    ("a.trunk.test", "A"): ["127.0.0.1"],
    ("b.trunk.test", "A"): ["127.0.0.2"],
    ("plain.test", "A"): ["127.0.0.9"],
}


@pytest.fixture
def server() -> Iterator[Any]:
    srv = _load_dns_server().DnsTestServer(RECORDS, ttl=60).start()
    yield srv
    srv.stop()


def test_naptr_srv_a_chain(server: Any) -> None:
    resolver = SipResolver([server.address], rng=random.Random(1))
    targets = asyncio.run(resolver.resolve("trunk.test", families=("A",)))
    assert targets == [
        Target("tcp", "127.0.0.2", 5072),
        Target("udp", "127.0.0.1", 5071),
        Target("udp", "127.0.0.2", 5073),
    ]
    assert ("trunk.test", "NAPTR") in server.queries
    assert ("_sip._tcp.trunk.test", "SRV") in server.queries


def test_no_naptr_uses_srv_then_a(server: Any) -> None:
    resolver = SipResolver([server.address])
    targets = asyncio.run(resolver.resolve("plain.test", families=("A",)))
    assert targets == [Target("udp", "127.0.0.9", 5060)]


def test_explicit_transport_and_answers_converted(server: Any) -> None:
    resolver = SipResolver([server.address])
    targets = asyncio.run(resolver.resolve("trunk.test", transport="udp", families=("A",)))
    assert [t.port for t in targets] == [5071, 5073]
    records = asyncio.run(resolver.lookup(Query("_sip._udp.trunk.test", "SRV")))
    assert set(records) == {Srv(10, 0, 5071, "a.trunk.test."), Srv(20, 0, 5073, "b.trunk.test.")}


def test_cache_serves_until_ttl_then_re_resolves(server: Any) -> None:
    now = [100.0]
    resolver = SipResolver([server.address], clock=lambda: now[0])

    async def run() -> list[Target]:
        return await resolver.resolve("plain.test", port=5060, families=("A",))

    assert asyncio.run(run()) == [Target("udp", "127.0.0.9", 5060)]
    asked = len(server.queries)
    server.set_records({("plain.test", "A"): ["127.0.0.10"]})
    now[0] += 30  # inside the 60 s TTL: cached
    assert asyncio.run(run()) == [Target("udp", "127.0.0.9", 5060)]
    assert len(server.queries) == asked and resolver.stats["cache_hits"] == 1
    now[0] += 31  # expired: looked up again
    assert asyncio.run(run()) == [Target("udp", "127.0.0.10", 5060)]
    assert len(server.queries) == asked + 1


def test_unknown_name_and_dead_server_give_no_targets(server: Any) -> None:
    resolver = SipResolver([server.address])
    assert asyncio.run(resolver.resolve("nothing.test")) == []
    dead = SipResolver([("127.0.0.1", 9)], timeout=0.5)
    assert asyncio.run(dead.resolve("trunk.test", port=5060)) == []
    assert dead.stats["failures"] >= 1


def test_numeric_host_asks_nothing(server: Any) -> None:
    resolver = SipResolver([server.address])
    assert asyncio.run(resolver.resolve("127.0.0.5", transport="tcp")) == [
        Target("tcp", "127.0.0.5", 5060)]
    assert server.queries == []


def test_resolve_trunk_keeps_the_configured_transport(server: Any) -> None:
    resolver = SipResolver([server.address])

    async def run() -> tuple[list[Target], list[Target], list[Target]]:
        by_naptr = await resolver.resolve_trunk("trunk.test", None, "udp")
        with_port = await resolver.resolve_trunk("plain.test", 5070, "tcp")
        numeric = await resolver.resolve_trunk("127.0.0.3", None, "tls", server_name="sip.test")
        return by_naptr, with_port, numeric

    by_naptr, with_port, numeric = asyncio.run(run())
    assert [t.transport for t in by_naptr] == ["udp", "udp"]  # the TCP NAPTR is skipped
    assert [t.port for t in by_naptr] == [5071, 5073]
    assert [(t.transport, t.host, t.port) for t in with_port] == [("tcp", "127.0.0.9", 5070)]
    assert numeric == [Target("tls", "127.0.0.3", 5061, "sip.test")]


@pytest.mark.parametrize(("soa_minimum", "held"), [(None, 5.0), (12, 12.0), (0, 1.0),
                                                   (86400, 30.0)])
def test_negative_answers_are_held_as_the_soa_says_within_bounds(
        soa_minimum: int | None, held: float) -> None:
    """RFC 2308: SOA MINIMUM from the authority section, clamped 1..30 s; 5 s without one."""
    srv = _load_dns_server().DnsTestServer({("known.test", "A"): ["127.0.0.5"]},
                                           negative_ttl=soa_minimum).start()
    now = [100.0]
    try:
        resolver = SipResolver([srv.address], clock=lambda: now[0])

        async def ask(name: str, rtype: str) -> None:
            assert await resolver.lookup(Query(name, rtype)) == []

        for name, rtype in (("gone.test", "A"), ("known.test", "AAAA")):  # NXDOMAIN, NODATA
            asyncio.run(ask(name, rtype))
            asked = len(srv.queries)
            now[0] += held - 0.5
            asyncio.run(ask(name, rtype))
            assert len(srv.queries) == asked  # still held
            now[0] += 0.5
            asyncio.run(ask(name, rtype))
            assert len(srv.queries) == asked + 1  # expired: asked again
    finally:
        srv.stop()
