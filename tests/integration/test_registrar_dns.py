"""A registrar whose name does not exist says so (issue 6, item 8).

The trunk's registrar is `nonexistent.invalid` (RFC 2606: .invalid never resolves) and the
daemon asks a loopback DNS server that answers NXDOMAIN for every name. `branchline status`
and the log used to say only "registrar unreachable", which sends an admin looking at
firewalls; they must say that DNS found no such name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .dns_server import DnsTestServer
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.slow]

HOST = "nonexistent.invalid"


def config(tmp: Path, sip_port: int, dns: tuple[str, int]) -> str:
    return f"""
gateway:
  name: dns-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33200-33299
  dns_servers: ["{dns[0]}:{dns[1]}"]
trunks:
  - name: main
    registrar: {HOST}
    expires: 60
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk: {{name: main, username: "4420", password: "a-long-secret"}}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GatewayProcess]:
    sip_port = free_port()
    with DnsTestServer({}) as dns:
        gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, dns.address))
        try:
            gw.start()
            yield gw
        finally:
            gw.stop()
            release(sip_port)


def test_status_and_log_say_dns_found_no_such_name(daemon: GatewayProcess) -> None:
    def reason() -> str:
        [reg] = daemon.status()["registrations"]
        return str(reg["reason"])

    daemon.wait_until("a registration failure", lambda: reason() not in ("starting", ""))
    daemon.wait_until("the DNS reason", lambda: "DNS found no such name" in reason(),
                      timeout=5)
    text = reason()
    assert HOST in text and "unreachable" not in text, text
    [reg] = daemon.status()["registrations"]
    assert reg["registered"] is False
    log = daemon.log_text()
    assert f"registrar {HOST}: DNS found no such name" in log, log[-3000:]


def test_name_servers_that_do_not_answer_are_not_called_no_such_name(tmp_path: Path) -> None:
    """With the name server down the name may well exist: say the lookup failed instead."""
    sip_port, dead_dns = free_port(), free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, ("127.0.0.1", dead_dns)))
    try:
        gw.start(timeout=30)

        def reason() -> str:
            [reg] = gw.status()["registrations"]
            return str(reg["reason"])

        gw.wait_until("the DNS reason", lambda: "DNS lookup failed" in reason(), timeout=15)
        assert "no such name" not in reason()
    finally:
        gw.stop()
        release(sip_port, dead_dns)
