"""`security.digest_algorithms` reaches the daemon's SIP edge (issue 6, item 2).

A raw UDP REGISTER from a stranger gets the edge's 401; its WWW-Authenticate headers are
the offer. By default that is MD5 first, SHA-256 second (clients that answer only the
first challenge can still register); `digest_algorithms: [SHA-256]` offers SHA-256 alone.
`branchline check-config` refuses bad lists with line and column.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.slow]


def config(tmp: Path, sip_port: int, security: str) -> str:
    return f"""
gateway:
  name: offer-gw
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33300-33399
lines:
  - name: "1"
    backend: sim
    number: "101"
{security}"""


def offered(sip_port: int) -> list[str]:
    """The algorithms of the 401's challenges to one REGISTER, in header order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        tag = secrets.token_hex(6)
        sock.sendto("\r\n".join([
            f"REGISTER sip:127.0.0.1:{sip_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag};rport",
            "Max-Forwards: 70",
            f"From: <sip:100@127.0.0.1>;tag={tag}",
            "To: <sip:100@127.0.0.1>",
            f"Call-ID: {tag}",
            "CSeq: 1 REGISTER",
            f"Contact: <sip:100@127.0.0.1:{port}>",
            "Content-Length: 0", "", ""]).encode(), ("127.0.0.1", sip_port))
        sock.settimeout(3)
        data = sock.recv(65535).decode(errors="replace")
    assert data.startswith("SIP/2.0 401 "), data
    challenges = re.findall(r"(?mi)^WWW-Authenticate: *(Digest [^\r\n]+)", data)
    algorithms = [re.search(r"algorithm=([A-Za-z0-9-]+)", c) for c in challenges]
    assert all(algorithms), challenges
    return [m.group(1).upper() for m in algorithms if m]


@pytest.mark.parametrize(("security", "expected"), [
    ("", ["MD5", "SHA-256"]),
    ("security:\n  digest_algorithms: [SHA-256]\n", ["SHA-256"]),
    ("security:\n  digest_algorithms: [SHA-256, MD5]\n", ["SHA-256", "MD5"]),
], ids=["default", "sha256-only", "sha256-first"])
def test_the_daemon_offers_the_configured_digest_algorithms(
        tmp_path: Path, security: str, expected: list[str]) -> None:
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, security))
    try:
        gw.start()
        assert offered(sip_port) == expected
    finally:
        gw.stop()
        release(sip_port)


@pytest.mark.parametrize(("security", "where", "message"), [
    ("security:\n  digest_algorithms: [MD5, SHA-1]\n", "13:28", "unknown value 'SHA-1'"),
    ("security:\n  digest_algorithms: []\n", "13:22", "list is empty"),
    ("security:\n  digest_algorithms: [MD5, SHA-256, MD5]\n", "13:37", "'MD5' is listed twice"),
    ("security:\n  digest_algorithms: [sha-256]\n", "13:23", "did you mean 'SHA-256'?"),
])
def test_check_config_refuses_bad_offers_with_line_and_column(
        tmp_path: Path, security: str, where: str, message: str) -> None:
    path = tmp_path / "branchline.yaml"
    path.write_text(config(tmp_path, 5060, security))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}:{where}: security.digest_algorithms"), line
    assert message in line, line
