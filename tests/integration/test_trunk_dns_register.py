"""A trunk whose DNS failed at boot registers once DNS answers, without a restart (issue 6, 3).

The gateway knows the Kamailio trunk only as `registrar: late.test` plus `sip.dns_servers`.
While the daemon starts, the loopback DNS server is either bound but silent (the WAN is
down) or answers NXDOMAIN for everything (the records are not there yet). Then it answers
with an SRV record pointing at Kamailio. The line must register, and status must stop
saying that DNS failed. The old daemon resolved the registrar once at start and never
registered until restarted. A registered line whose SRV record moves to another Kamailio
must follow it at its next refresh (the old daemon kept refreshing at the first).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import KamailioFactory
from .dns_server import DnsTestServer
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.peers, pytest.mark.slow]

DOMAIN = "late.test"
USER, PASSWORD = "gateway", "gateway-secret"


def gateway_config(tmp: Path, sip_port: int, dns: tuple[str, int]) -> str:
    return f"""
gateway:
  name: late-dns-gw
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  dns_servers: ["{dns[0]}:{dns[1]}"]
trunks:
  - name: main
    registrar: {DOMAIN}
    expires: 60
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk: {{name: main, username: {USER}, password: {PASSWORD}}}
"""


@pytest.mark.parametrize("dns_at_boot", ["silent", "nxdomain"])
def test_line_registers_once_dns_answers_without_a_restart(
        tmp_path: Path, kamailio_factory: KamailioFactory, dns_at_boot: str) -> None:
    trunk = kamailio_factory(users={USER: PASSWORD}, domain=DOMAIN)
    records = {
        (f"_sip._udp.{DOMAIN}", "SRV"): [f"10 0 {trunk.port} sip.{DOMAIN}."],
        (f"sip.{DOMAIN}", "A"): ["127.0.0.1"],
    }
    dns = DnsTestServer({} if dns_at_boot == "nxdomain" else records, ttl=60)
    if dns_at_boot == "nxdomain":
        dns.start()  # answering, but the names do not exist yet
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port, dns.address))

    def registration() -> dict[str, object]:
        [reg] = gw.status()["registrations"]
        return reg

    try:
        gw.start(timeout=40.0)
        expected = "DNS lookup failed" if dns_at_boot == "silent" else "DNS found no such name"
        gw.wait_until("the DNS reason", lambda: expected in str(registration()["reason"]),
                      timeout=15)
        assert not trunk.registered(USER)
        if dns_at_boot == "silent":
            dns.start()
        else:
            dns.set_records(records)
        back = time.monotonic()
        # Lookups are retried with backoff (5 s, 10 s, 20 s ...); a "no such name" without
        # an SOA is held 5 s, so the first retry reaches DNS. The timeout is generous.
        gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=60,
                      interval=0.2)
        print(f"\nregistered {time.monotonic() - back:.1f} s after DNS answered "
              f"({dns_at_boot} at boot); queries: {len(dns.queries)}")
        assert trunk.registered(USER)
        reg = registration()
        assert reg["registered"] is True and "DNS" not in str(reg["reason"]), reg
        assert "now trusted as" in gw.log_text()
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])
        dns.stop()
        release(sip_port)


def test_a_registered_line_follows_a_changed_dns_answer_at_its_next_refresh(
        tmp_path: Path, kamailio_factory: KamailioFactory) -> None:
    """The SRV record moves from one Kamailio to another: the binding moves with it."""
    old = kamailio_factory(users={USER: PASSWORD}, domain=DOMAIN)
    new = kamailio_factory(users={USER: PASSWORD}, domain=DOMAIN)

    def records(port: int) -> dict[tuple[str, str], list[str]]:
        return {(f"_sip._udp.{DOMAIN}", "SRV"): [f"10 0 {port} sip.{DOMAIN}."],
                (f"sip.{DOMAIN}", "A"): ["127.0.0.1"]}

    sip_port = free_port()
    with DnsTestServer(records(old.port), ttl=5) as dns:
        gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port, dns.address))
        try:
            gw.start()
            gw.wait_until("registered at the first", lambda: old.registered(USER), timeout=15)
            dns.set_records(records(new.port))
            moved = time.monotonic()
            # Answers are kept at least 30 s; expires 60 refreshes every 30 s.
            gw.wait_until("registered at the second", lambda: new.registered(USER),
                          timeout=75, interval=0.5)
            print(f"\nregistered at the new target {time.monotonic() - moved:.1f} s after "
                  "the SRV record changed")
            assert gw.registered("1")
        finally:
            gw.stop()
            release(sip_port)
