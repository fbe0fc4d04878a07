"""The daemon trusts a trunk by what its name resolves to now, not by what it resolved to at boot.

A loopback DNS server publishes `_sip._udp.carrier.test` (one SRV record) pointing at a
UDP socket of this test on its own loopback address and port: that socket is the trunk.
The gateway knows the trunk only as `registrar: carrier.test` plus `sip.dns_servers`.

The DNS server is bound but silent while the daemon starts (the WAN is down at boot), so
the first lookups time out. An OPTIONS from the trunk's address then gets the 401 any
stranger gets. Once DNS answers, the same OPTIONS must be accepted as the trunk's (200),
without a restart.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

import pytest

from .dns_server import DnsTestServer
from .flood import pick_loopback
from .gateway_proc import GatewayProcess
from .peers.ports import free_port

pytestmark = [pytest.mark.slow]

DOMAIN = "carrier.test"


def gateway_config(tmp: Path, sip_port: int, dns: tuple[str, int]) -> str:
    return f"""
gateway:
  name: trust-gw
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33000-33999
  dns_servers: ["{dns[0]}:{dns[1]}"]
trunks:
  - name: carrier
    registrar: {DOMAIN}
    keepalive: none
lines:
  - name: "1"
    backend: sim
    number: "101"
"""


def options_status(sock: socket.socket, dest: tuple[str, int], timeout: float = 2.0) -> int | None:
    """Send one OPTIONS from `sock`; the status of the answer, None if none came."""
    host, port = sock.getsockname()[:2]
    tag = secrets.token_hex(4)
    sock.sendto(
        (f"OPTIONS sip:{dest[0]}:{dest[1]} SIP/2.0\r\n"
         f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{tag};rport\r\n"
         f"Max-Forwards: 70\r\nFrom: <sip:carrier@{DOMAIN}>;tag={tag}\r\n"
         f"To: <sip:{dest[0]}:{dest[1]}>\r\nCall-ID: {tag}@{host}\r\nCSeq: 1 OPTIONS\r\n"
         "Content-Length: 0\r\n\r\n").encode(), dest)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        if data.startswith(b"SIP/2.0 ") and tag.encode() in data and b" 100 " not in data[:12]:
            return int(data[8:11])
    return None


def test_trunk_whose_dns_failed_at_start_is_trusted_by_its_srv_target_once_dns_answers(
        tmp_path: Path) -> None:
    trunk_port = free_port()
    trunk_host = pick_loopback([trunk_port])
    records = {
        (f"_sip._udp.{DOMAIN}", "SRV"): [f"10 0 {trunk_port} a.{DOMAIN}."],
        (f"a.{DOMAIN}", "A"): [trunk_host],
    }
    dns = DnsTestServer(records, ttl=60)  # bound, not answering yet: DNS is down at boot
    trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk.bind((trunk_host, trunk_port))
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port, dns.address))
    try:
        gw.start(timeout=40.0)
        dest = ("127.0.0.1", sip_port)
        assert options_status(trunk, dest) == 401  # a stranger until DNS says otherwise
        dns.start()
        started = time.monotonic()
        status = None
        while time.monotonic() - started < 40.0:
            status = options_status(trunk, dest)
            if status == 200:
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        print(f"\ntrusted {took:.1f} s after DNS came back; queries: {dns.queries}")
        assert status == 200, gw.log_text()[-4000:]
        assert (f"_sip._udp.{DOMAIN}", "SRV") in dns.queries
        # The SRV target is trusted on its own port only: the same address from another
        # port is still a stranger.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind((trunk_host, 0))
            assert options_status(other, dest) == 401
        assert "now trusted as" in gw.log_text()
    finally:
        trunk.close()
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])
        dns.stop()
