"""Trunk failover by DNS SRV (issue 3, item 5): the first target is dead, the second answers.

A loopback DNS server publishes `_sip._udp.failover.test` with two SRV records: priority 10
points at a port where nothing listens, priority 20 at a live Kamailio. The gateway knows the
trunk only as `registrar: failover.test` plus `sip.dns_servers`. Registration and a call must
reach the live Kamailio within 2 s. Figures are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BaresipFactory, KamailioFactory
from .dns_server import DnsTestServer
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.slow]

DOMAIN = "failover.test"
LINE_USER = "gateway"
LINE_PASS = "gateway-secret"
FAILOVER_LIMIT = 2.0


def gateway_config(tmp: Path, sip_port: int, dns: tuple[str, int], *, register: bool) -> str:
    account = f"""
    trunk:
      name: main
      username: {LINE_USER}
      password: {LINE_PASS}""" if register else ""
    return f"""
gateway:
  name: failover-gw
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  dns_servers: ["{dns[0]}:{dns[1]}"]
trunks:
  - name: main
    registrar: {DOMAIN}
    expires: 60
    failover_timeout: 1.5
lines:
  - name: "1"
    backend: sim
    number: "101"{account}
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "\\\\d+"
      to: trunk:main
"""


@pytest.fixture
def live_trunk(kamailio_factory: KamailioFactory) -> KamailioTrunk:
    return kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"}, domain=DOMAIN)


@pytest.fixture
def dns_server(live_trunk: KamailioTrunk) -> Iterator[DnsTestServer]:
    dead = free_port()  # nothing listens here: ICMP port unreachable, or silence
    records = {
        (DOMAIN, "A"): ["127.0.0.1"],
        (f"_sip._udp.{DOMAIN}", "SRV"): [
            f"10 0 {dead} dead.{DOMAIN}.",
            f"20 0 {live_trunk.port} live.{DOMAIN}.",
        ],
        (f"dead.{DOMAIN}", "A"): ["127.0.0.1"],
        (f"live.{DOMAIN}", "A"): ["127.0.0.1"],
    }
    with DnsTestServer(records) as server:
        yield server


def test_registration_fails_over_to_second_srv_target(
    tmp_path: Path, live_trunk: KamailioTrunk, dns_server: DnsTestServer
) -> None:
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, free_port(), dns_server.address,
                                                 register=True))
    started = time.monotonic()
    gw.start()
    ready = time.monotonic()
    try:
        gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10, interval=0.05)
        done = time.monotonic()
        print(f"\nregistration via 2nd SRV target: {done - ready:.2f} s after the daemon was "
              f"ready, {done - started:.2f} s after launch")
        assert live_trunk.registered(LINE_USER)
        assert (f"_sip._udp.{DOMAIN}", "SRV") in dns_server.queries
        assert done - ready <= FAILOVER_LIMIT
    finally:
        gw.stop()


def test_call_fails_over_to_second_srv_target(
    tmp_path: Path, live_trunk: KamailioTrunk, dns_server: DnsTestServer,
    baresip_factory: BaresipFactory,
) -> None:
    bob = baresip_factory("300", trunk=live_trunk, password="bob-pass-300", tone=1000)
    bob.wait_registered()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, free_port(), dns_server.address,
                                                 register=False))
    gw.start()
    try:
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        dialled = time.monotonic()
        gw.phone("1", "dial", digits="300")
        bob.wait_for_event("CALL_INCOMING", timeout=10)
        rang = time.monotonic()
        print(f"\nINVITE via 2nd SRV target rang the far end {rang - dialled:.2f} s after dialling")
        assert rang - dialled <= FAILOVER_LIMIT
        gw.phone("1", "onhook")
    finally:
        gw.stop()
