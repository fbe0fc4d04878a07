"""The real daemon against a real NOTIFY_SOCKET, and its real log lines against fail2ban.

- ``branchline run`` with NOTIFY_SOCKET bound by the test (a datagram socket, as systemd's)
  and WATCHDOG_USEC: READY=1 with a STATUS= line once started, WATCHDOG=1 every
  WATCHDOG_USEC/2 from the event loop, none while the process is SIGSTOPped, pings again
  after SIGCONT, STOPPING=1 on SIGTERM.
- A scanner guessing passwords (REGISTER and INVITE with a wrong password) makes the daemon
  log auth failures; ``fail2ban-regex`` with the shipped filter matches every one of them,
  in the daemon's stderr format and in the journal's, and nothing else in the log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gateway.sip import auth
from gateway.sip.message import Response, parse_message

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

pytestmark = [pytest.mark.peers]

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "systemd" / "fail2ban" / "filter.d" / "branchline.conf"
WATCHDOG_USEC = 400_000  # pings every 0.2 s
PHONE_USER, PHONE_PASSWORD = "201", "alice-Secret-201"


def config(tmp: Path, sip_port: int, trunk_port: int) -> str:
    return f"""
gateway:
  name: notify-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33000-33099
security:
  digest_algorithms: [MD5]
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk_port}
lines:
  - name: "1"
    backend: sim
    number: "101"
sip_phones:
  - {{user: "{PHONE_USER}", password: "{PHONE_PASSWORD}", number: "{PHONE_USER}"}}
  - {{user: "202", password: "bob-Secret-202", number: "202"}}
"""


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.backlog: list[str] = []  # received by receive(), searched by wait_for() first

    def receive(self, timeout: float) -> list[str]:
        """Every message arriving within `timeout` seconds."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(65536).decode())
            except TimeoutError:
                break
        self.backlog.extend(got)
        return got

    def wait_for(self, prefix: str, timeout: float) -> tuple[str, float]:
        start = time.monotonic()
        deadline = start + timeout
        seen: list[str] = []
        for i, message in enumerate(self.backlog):
            if message.startswith(prefix) or f"\n{prefix}" in message:
                del self.backlog[:i + 1]
                return message, 0.0
        self.backlog.clear()
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            if message.startswith(prefix) or f"\n{prefix}" in message:
                return message, time.monotonic() - start
            if message != "WATCHDOG=1":
                seen.append(message)
        raise AssertionError(f"no {prefix} within {timeout} s; other messages: {seen}")

    def close(self) -> None:
        self.sock.close()


def test_ready_status_and_a_watchdog_that_stops_with_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = Listener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sip_port, trunk_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, trunk_port))
    try:
        gw.start()
        ready, _ = listener.wait_for("READY=1", timeout=10)
        print(f"first message with READY=1: {ready!r}")
        fields = dict(line.split("=", 1) for line in ready.split("\n"))
        assert fields["STATUS"].startswith("lines 1 (0 in call); trunks "), ready
        assert fields["STATUS"].endswith("calls 0"), ready

        # Pings keep coming while the loop turns: about one per WATCHDOG_USEC/2.
        pings = [m for m in listener.receive(2.0) if m == "WATCHDOG=1"]
        print(f"WATCHDOG=1 pings in 2 s with WATCHDOG_USEC={WATCHDOG_USEC}: {len(pings)}")
        assert len(pings) >= 5, pings

        # The trunk nobody answers goes down: STATUS follows (at most once a second).
        status, took = listener.wait_for("STATUS=lines 1 (0 in call); trunks 0 up, 1 down (main)",
                                         timeout=15)
        print(f"STATUS with the trunk down after {took:.1f} s: {status}")

        assert gw.pid is not None
        gw_pid = gw.pid
        os.kill(gw_pid, signal.SIGSTOP)
        try:
            listener.receive(0.1)  # what was already in flight
            frozen = listener.receive(1.5)
            listener.backlog.clear()
        finally:
            os.kill(gw_pid, signal.SIGCONT)
        assert "WATCHDOG=1" not in frozen, frozen
        _, resumed = listener.wait_for("WATCHDOG=1", timeout=2)
        assert resumed > 0  # a new ping, not one from before the stop
        print(f"first WATCHDOG=1 {resumed * 1000:.0f} ms after SIGCONT")

        gw.stop()
        stopping = listener.receive(1.0)
        assert any(m.startswith("STOPPING=1") for m in stopping), stopping
    finally:
        gw.stop()
        listener.close()
        release(sip_port, trunk_port)


# -- fail2ban on the daemon's own lines ---------------------------------------------------------


def _send(sock: socket.socket, gw_port: int, method: str, call_id: str, cseq: int,
          branch: str, extra: str = "", to: str | None = None) -> None:
    port = sock.getsockname()[1]
    invite = method in ("INVITE", "ACK")
    target = f"sip:202@127.0.0.1:{gw_port}" if invite else f"sip:127.0.0.1:{gw_port}"
    to = to or ("<sip:202@127.0.0.1>" if invite else f"<sip:{PHONE_USER}@127.0.0.1>")
    message = (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{PHONE_USER}@127.0.0.1>;tag={call_id[:8]}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + ("" if method == "ACK" else f"Contact: <sip:{PHONE_USER}@127.0.0.1:{port}>\r\n")
        + ("Expires: 600\r\n" if method == "REGISTER" else "")
        + extra
        + "Content-Length: 0\r\n\r\n"
    )
    sock.sendto(message.encode(), ("127.0.0.1", gw_port))


def _request(sock: socket.socket, gw_port: int, method: str, call_id: str, cseq: int,
             extra: str = "") -> Response:
    """Send one request and return its final answer (an INVITE's is ACKed)."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    _send(sock, gw_port, method, call_id, cseq, branch, extra)
    while True:
        data, _ = sock.recvfrom(65536)
        reply = parse_message(data)
        assert isinstance(reply, Response)
        if reply.status >= 200 and reply.call_id == call_id:
            break
    if method == "INVITE":  # same branch: the ACK of a non-2xx ends the server transaction
        _send(sock, gw_port, "ACK", call_id, cseq, branch, to=reply.headers.get("To"))
    return reply


def _attempt(sock: socket.socket, gw_port: int, method: str, password: str) -> int:
    """One request, its challenge answered with `password`; the final status."""
    call_id = secrets.token_hex(12)
    first = _request(sock, gw_port, method, call_id, 1)
    assert first.status in (401, 407), first.status
    header = "WWW-Authenticate" if first.status == 401 else "Proxy-Authenticate"
    answer = "Authorization" if first.status == 401 else "Proxy-Authorization"
    challenge = auth.select_challenge(first.headers.get_all(header))
    uri = f"sip:202@127.0.0.1:{gw_port}" if method == "INVITE" else f"sip:127.0.0.1:{gw_port}"
    value = auth.build_authorization(challenge, method=method, uri=uri, username=PHONE_USER,
                                     password=password)
    second = _request(sock, gw_port, method, call_id, 2, f"{answer}: {value}\r\n")
    return second.status


def _fail2ban_regex(log: Path, *extra: str) -> list[str]:
    binary = require_binary("fail2ban-regex", shutil.which("fail2ban-regex"))
    proc = subprocess.run([binary, *extra, "-o", "ip", str(log), str(FILTER)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.split()


def test_fail2ban_matches_the_daemon_s_auth_failures(tmp_path: Path) -> None:
    require_binary("fail2ban-regex", shutil.which("fail2ban-regex"))
    sip_port, trunk_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, trunk_port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        gw.start()
        # The phone itself, with its password: no security event.
        assert _attempt(sock, sip_port, "REGISTER", PHONE_PASSWORD) == 200
        # Its first, unauthenticated REGISTER is an unknown source's: one SECURITY line per
        # source and window, by design (gateway/runtime/edge.py); nothing else so far.
        assert [line for line in gw.log_text().splitlines() if "SECURITY" in line
                and "event=unknown-source" not in line] == []

        # A scanner guessing: two REGISTERs and one INVITE with wrong passwords.
        failures = [_attempt(sock, sip_port, "REGISTER", "guess-1"),
                    _attempt(sock, sip_port, "REGISTER", "guess-2")]
        failures.append(_attempt(sock, sip_port, "INVITE", "guess-3"))
        assert all(status == 403 for status in failures), failures
        time.sleep(0.3)
    finally:
        sock.close()
        gw.stop()
        release(sip_port, trunk_port)

    text = gw.log_text()
    security = [line for line in text.splitlines() if "SECURITY event=" in line]
    auth_failures = [line for line in security if "event=auth-failure" in line]
    assert len(auth_failures) >= len(failures), text[-3000:]
    assert any("method=INVITE" in line for line in auth_failures), auth_failures
    assert any("method=REGISTER" in line for line in auth_failures), auth_failures

    # Every line that is not a security event (start, registrations, refusals, stop): none
    # may match.
    normal = tmp_path / "normal.log"
    normal.write_text("".join(line + "\n" for line in text.splitlines()
                              if "SECURITY" not in line))
    assert len(normal.read_text().splitlines()) > 5
    assert _fail2ban_regex(normal) == []

    # The daemon's stderr format, whole log: one match per banned-kind event, nothing else.
    bannable = [line for line in security
                if any(f"event={k} " in line for k in ("auth-failure", "unknown-source",
                                                       "rate-limited"))]
    whole = tmp_path / "daemon.log"
    whole.write_text(text)
    found = _fail2ban_regex(whole)
    print(f"{len(auth_failures)} auth-failure lines, {len(found)} fail2ban matches")
    assert found == ["127.0.0.1"] * len(bannable)

    # The same records as journald shows them (gateway.runtime.logs.JOURNAL_FORMAT, after
    # "host branchline[pid]:"): the date is the journal's own, not in the message.
    journal = tmp_path / "journal.txt"
    journal.write_text("".join(f"gw branchline[4242]: {line.split(' ', 2)[2]}\n"
                               for line in text.splitlines() if line[:2] == "20"))
    assert _fail2ban_regex(journal, "--datepattern", "{NONE}") == ["127.0.0.1"] * len(bannable)
