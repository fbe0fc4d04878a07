"""`branchline security` against the running daemon: see a lock-out and lift it (issue 6, 8).

A password guesser on 127.0.0.1 sends REGISTERs with wrong digest passwords until the
daemon locks the address out and stops answering it. The admin's view must then list
127.0.0.1 with the time left and the failure count, and `security unblock 127.0.0.1`
must make the daemon answer that address again at once, instead of after a minute.

The daemon has no local SIP users yet (the survivable registrar is still to come), so "answered
again" is the 401 challenge a REGISTER from an allowed source gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.slow]

REALM = "lockout-gw"


def config(sip_port: int, tmp: Path) -> str:
    return f"""
gateway:
  name: {REALM}
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33100-33199
lines:
  - name: "1"
    backend: sim
    number: "101"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GatewayProcess]:
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, config(sip_port, tmp_path))
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()
        release(sip_port)


class Guesser:
    """A REGISTERing client on one UDP socket of 127.0.0.1, like a phone or svcrack."""

    def __init__(self, port: int) -> None:
        self.dest = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local_port = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(8)
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def register(self, authorization: str | None = None, timeout: float = 1.0) -> bytes | None:
        """Send one REGISTER; the answer, or None when the daemon stays silent."""
        self.cseq += 1
        uri = f"sip:127.0.0.1:{self.dest[1]}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:100@127.0.0.1>;tag={secrets.token_hex(4)}",
            "To: <sip:100@127.0.0.1>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:100@127.0.0.1:{self.local_port}>",
            "Expires: 60",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines += ["Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), self.dest)
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65535)
                if f"CSeq: {self.cseq} REGISTER".encode() in data:
                    return data
        except TimeoutError:
            return None

    def wrong_password(self, challenge: bytes) -> str:
        """Digest credentials (MD5, qop=auth) for the challenge, with a wrong password."""
        text = challenge.decode(errors="replace")
        md5 = [v for v in re.findall(r"WWW-Authenticate: (Digest [^\r\n]+)", text)
               if "SHA-256" not in v]
        assert md5, f"no MD5 challenge in:\n{text}"
        nonce = re.search(r'nonce="([^"]+)"', md5[0])
        assert nonce is not None
        uri = f"sip:127.0.0.1:{self.dest[1]}"
        cnonce, nc = secrets.token_hex(8), "00000001"

        def h(value: str) -> str:
            return hashlib.md5(value.encode()).hexdigest()

        ha1 = h(f"100:{REALM}:not-the-password")
        response = h(f"{ha1}:{nonce.group(1)}:{nc}:{cnonce}:auth:{h('REGISTER:' + uri)}")
        return (f'Digest username="100", realm="{REALM}", nonce="{nonce.group(1)}", '
                f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, '
                f'cnonce="{cnonce}"')


def cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--control", gw.control_path],
        capture_output=True, text=True, timeout=30, env=dict(os.environ),
    )


def status_line(answer: bytes | None) -> str:
    return answer.split(b"\r\n", 1)[0].decode() if answer else "(no answer)"


def test_lock_out_is_listed_and_unblock_lifts_it(daemon: GatewayProcess) -> None:
    guesser = Guesser(daemon.sip_port)  # type: ignore[attr-defined]
    try:
        before = cli(daemon, "security", "--json")
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout) == {"blocked": []}

        # Guess until the daemon goes silent: wrong passwords get 403, then nothing.
        refused = 0
        for _ in range(20):
            challenge = guesser.register()
            if challenge is None:
                break
            assert status_line(challenge).startswith("SIP/2.0 401"), status_line(challenge)
            answer = guesser.register(guesser.wrong_password(challenge))
            if answer is None:
                break
            assert status_line(answer).startswith("SIP/2.0 403"), status_line(answer)
            refused += 1
        assert refused >= 1
        assert guesser.register() is None, "the daemon still answers a locked-out source"

        listed = cli(daemon, "security", "--json")
        assert listed.returncode == 0, listed.stderr
        [entry] = json.loads(listed.stdout)["blocked"]
        assert entry["source"] == "127.0.0.1"
        assert entry["bucket"] == "auth-failure"
        assert entry["failures"] == refused
        assert 0 < entry["seconds_left"] <= 60

        table = cli(daemon, "security")
        assert table.returncode == 0, table.stderr
        assert re.search(r"^127\.0\.0\.1\s+too many failed authentications\s+\d+\s+\d+s",
                         table.stdout, re.M), table.stdout

        lifted = cli(daemon, "security", "unblock", "127.0.0.1")
        assert lifted.returncode == 0, lifted.stderr
        assert "127.0.0.1: unblocked" in lifted.stdout

        # Answered again at once: the challenge a REGISTER from an allowed source gets.
        again = guesser.register()
        assert status_line(again).startswith("SIP/2.0 401"), status_line(again)
        assert json.loads(cli(daemon, "security", "--json").stdout) == {"blocked": []}

        not_blocked = cli(daemon, "security", "unblock", "192.0.2.1")
        assert not_blocked.returncode == 1
        assert "192.0.2.1 is not blocked" in not_blocked.stderr
        bad = cli(daemon, "security", "unblock", "example.org")
        assert bad.returncode == 1 and "not an IP address" in bad.stderr
        assert "unblocked by an admin" in daemon.log_text()
    finally:
        guesser.close()
