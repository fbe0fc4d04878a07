"""The trust's DNS lookups also say where to send: registrar and proxy targets follow DNS.

One lookup per trunk host name feeds both the edge's ACL and the send targets; the daemon is
told which trunks' targets moved. A loopback authoritative server answers, the clock is
fake and `refresh()` is driven by hand, as in test_trunk_trust.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

from gateway.config.loader import load_config_text
from gateway.config.schema import Config
from gateway.runtime.edge import build_edge
from gateway.runtime.resolver import SipResolver
from gateway.runtime.trunk_trust import TrunkTrust
from gateway.security.trunk_addresses import RefreshPolicy
from gateway.sip.target import Target


def _load_dns_server() -> ModuleType:
    path = Path(__file__).parents[1] / "integration" / "dns_server.py"
    spec = importlib.util.spec_from_file_location("branchline_test_dns_server_targets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDS = {
    ("_sip._udp.carrier.test", "SRV"): ["10 0 5071 a.carrier.test.", "20 0 5073 b.carrier.test."],
    ("a.carrier.test", "A"): ["127.0.0.21"],
    ("b.carrier.test", "A"): ["127.0.0.22"],
}
POLICY = RefreshPolicy(min_ttl=10.0, max_ttl=3600.0, retry_min=1.0, retry_max=8.0,
                       max_stale=100.0)


def config(proxy: str = "") -> Config:
    extra = f", proxy: '{proxy}'" if proxy else ""
    text = "\n".join([
        "gateway: {name: trust-gw, state_dir: /tmp/x}",
        "sip: {listen: 127.0.0.1:5070, public_host: 127.0.0.1}",
        "trunks:",
        f"  - {{name: main, registrar: carrier.test{extra}}}",
        "lines:",
        '  - {name: "1", backend: sim, number: "101"}',
        "",
    ])
    return load_config_text(text, route_probe=lambda toward: None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_targets_arrive_when_dns_answers_after_a_failed_start_and_survive_an_outage() -> None:
    server = _load_dns_server().DnsTestServer(RECORDS, ttl=60)  # bound, silent for now
    moved: list[set[str]] = []

    async def run() -> None:
        clock = Clock()
        cfg = config()
        [trunk] = cfg.trunks
        resolver = SipResolver([server.address], clock=clock, timeout=0.4)
        trust = TrunkTrust(cfg.trunks, build_edge(cfg), resolver, asyncio.get_running_loop(),
                           policy=POLICY, clock=clock, on_targets=moved.append)
        await trust.start()
        try:
            assert trust.targets_for(trunk, trunk.registrar) == ()
            assert trust.lookup_failed(trunk, trunk.registrar)
            assert moved == []
            server.start()
            clock.now += 10.0
            await trust.refresh()
            expected = (Target("udp", "127.0.0.21", 5071), Target("udp", "127.0.0.22", 5073))
            assert trust.targets_for(trunk, trunk.registrar) == expected
            assert trust.targets_for(trunk, trunk.proxy) == expected  # the same one lookup
            assert not trust.lookup_failed(trunk, trunk.registrar)
            assert moved == [{"main"}]
            # DNS goes silent again: the last answer is still where we send, within max_stale.
            server.stop()
            resolver.forget()
            clock.now += 61.0
            await trust.refresh()
            assert trust.targets_for(trunk, trunk.registrar) == expected
            assert moved == [{"main"}]
            clock.now += 200.0
            await trust.refresh()
            assert trust.targets_for(trunk, trunk.registrar) == ()
            assert moved == [{"main"}, {"main"}]
        finally:
            trust.stop()

    asyncio.run(run())


def test_an_ip_literal_proxy_is_not_the_trust_s_to_resolve() -> None:
    cfg = config(proxy="127.0.0.9:5090")
    [trunk] = cfg.trunks

    async def run() -> None:
        trust = TrunkTrust(cfg.trunks, build_edge(cfg), SipResolver([("127.0.0.1", 9)]),
                           asyncio.get_running_loop(), policy=POLICY, clock=Clock())
        assert trust.targets_for(trunk, trunk.proxy) is None
        assert trust.targets_for(trunk, trunk.registrar) == ()

    asyncio.run(run())
