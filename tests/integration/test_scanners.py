"""Internet scanners against the running daemon: sipvicious' svmap, svwar and svcrack.

The daemon has two simulated lines (101, 102) and a trunk on another loopback port, so the
scanner on 127.0.0.1 is not the trunk: it is an unknown source that has to authenticate.
Every tool targets 127.0.0.1:<daemon port> only. What must hold (issue 3, item 4):

- no call is placed: no line ever rings, the daemon never holds a call;
- svwar cannot tell the real extensions from fake ones (and our own probe sees the same
  bytes for both, apart from nonce, tags, Call-ID and Via);
- svcrack is rate-limited: no password found, the daemon stops answering it, and the log
  carries a rate-limited event;
- the shipped fail2ban filter matches the daemon's logged events, for host 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sip import auth

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release
from .peers.sipvicious import TARGET_HOST, Sipvicious, sipvicious_binary

pytestmark = [pytest.mark.peers, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "systemd" / "fail2ban" / "filter.d" / "branchline.conf"
REAL = ("101", "102")
FAKE = ("555", "999")


def scanner_config(sip_port: int, trunk_port: int, tmp: Path) -> str:
    return f"""
gateway:
  name: scan-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk_port}
lines:
  - name: "1"
    backend: sim
    number: "{REAL[0]}"
  - name: "2"
    backend: sim
    number: "{REAL[1]}"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: trunk:main
"""


class RingWatch:
    """Polls `status` in the background and remembers anything that looks like a call."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.seen: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status: dict[str, Any] = self.gw.status()
            except Exception as exc:  # the daemon dying is itself a finding
                self.seen.append(f"status failed: {exc}")
                return
            self.polls += 1
            for line in status["lines"]:
                if line["ringing"] or line["state"] != "idle" or line["call_id"]:
                    self.seen.append(f"line {line['name']}: {line}")
            if status["calls"]:
                self.seen.append(f"calls: {status['calls']}")
            self._stop.wait(0.1)

    def __enter__(self) -> RingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GatewayProcess]:
    for tool in ("svmap", "svwar", "svcrack"):
        require_binary(tool, sipvicious_binary(tool))
    sip_port, trunk_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, scanner_config(sip_port, trunk_port, tmp_path))
    gw.sip_port = sip_port  # type: ignore[attr-defined]
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        release(sip_port, trunk_port)


def sip_port(gw: GatewayProcess) -> int:
    port: int = gw.sip_port  # type: ignore[attr-defined]
    return port


def assert_no_call(gw: GatewayProcess, watch: RingWatch, scans: Sipvicious) -> None:
    assert watch.polls > 0
    assert watch.seen == [], f"{watch.seen[:5]}\n{scans.transcript()}"
    status = gw.status()
    assert status["calls"] == []
    assert all(not line["ringing"] and line["state"] == "idle" for line in status["lines"])
    log = gw.log_text()
    assert not re.search(r"line [12]: (ringing|connected)", log), log[-3000:]


def fail2ban_hosts(log: Path) -> list[str]:
    binary = require_binary("fail2ban-regex", shutil.which("fail2ban-regex"))
    proc = subprocess.run([binary, "-o", "ip", str(log), str(FILTER)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.split()


def security_lines(gw: GatewayProcess, kind: str) -> list[str]:
    return [line for line in gw.log_text().splitlines()
            if f"SECURITY event={kind} src={TARGET_HOST}:" in line]


# ---------------------------------------------------------------------- raw probe


def probe(port: int, method: str, ext: str, n: int) -> bytes:
    """One request as svwar builds it, from our own socket; returns the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((TARGET_HOST, 0))
        s.settimeout(5)
        lport = s.getsockname()[1]
        uri = f"sip:{TARGET_HOST}" if method == "REGISTER" else f"sip:{ext}@{TARGET_HOST}"
        msg = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {TARGET_HOST}:{lport};branch=z9hG4bKprobe{n};rport\r\n"
            "Max-Forwards: 70\r\n"
            f'From: "{ext}" <sip:{ext}@{TARGET_HOST}>;tag=probe{n}\r\n'
            f'To: "{ext}" <sip:{ext}@{TARGET_HOST}>\r\n'
            f"Call-ID: probe-{n}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:{ext}@{TARGET_HOST}:{lport}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (TARGET_HOST, port))
        while True:
            data = s.recv(65535)
            if not data.startswith(b"SIP/2.0 100 "):
                return data


def md5_guess(port: int, ext: str, password: str, n: int) -> int | None:
    """REGISTER as `ext`, answer the MD5 challenge with `password`: the final status, or
    None when the daemon stays silent (locked out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((TARGET_HOST, 0))
        s.settimeout(2)
        lport = s.getsockname()[1]
        uri = f"sip:{TARGET_HOST}"

        def register(cseq: int, authz: str | None) -> bytes | None:
            msg = (
                f"REGISTER {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {TARGET_HOST}:{lport};branch=z9hG4bKguess{n}x{cseq};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{ext}@{TARGET_HOST}>;tag=guess{n}\r\n"
                f"To: <sip:{ext}@{TARGET_HOST}>\r\n"
                f"Call-ID: guess-{n}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{ext}@{TARGET_HOST}:{lport}>\r\n"
                + (f"Authorization: {authz}\r\n" if authz else "")
                + "Content-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (TARGET_HOST, port))
            try:
                while True:
                    data = s.recv(65535)
                    if not data.startswith(b"SIP/2.0 100 "):
                        return data
            except TimeoutError:
                return None

        first = register(1, None)
        if first is None:
            return None
        challenges = re.findall(r"(?m)^WWW-Authenticate: (Digest .*algorithm=MD5.*?)\r?$",
                                first.decode(errors="replace"))
        assert challenges, first
        ch = auth.Challenge.parse(challenges[0])
        answer = register(2, auth.build_authorization(ch, method="REGISTER", uri=uri,
                                                      username=ext, password=password))
        return None if answer is None else int(answer.split()[1])


def normalise(wire: bytes, ext: str) -> str:
    text = wire.decode(errors="replace")
    text = re.sub(r'nonce="[^"]*"', 'nonce="N"', text)
    text = re.sub(r"tag=[^;\r\n>]+", "tag=T", text)
    text = re.sub(r"(?m)^(Call-ID|Via|i|v): .*$", r"\1: X", text)
    return text.replace(f'"{ext}"', '"EXT"').replace(f"sip:{ext}@", "sip:EXT@")


# ---------------------------------------------------------------------- tests


def test_svmap_finds_the_box_but_learns_nothing_and_rings_nothing(
        daemon: GatewayProcess) -> None:
    scans = Sipvicious(sip_port(daemon))
    with RingWatch(daemon) as watch:
        run = scans.svmap()
    assert f"{TARGET_HOST}:{sip_port(daemon)}" in run.output, scans.transcript()
    assert not any(number in run.output for number in REAL), scans.transcript()
    assert_no_call(daemon, watch, scans)
    assert len(security_lines(daemon, "unknown-source")) >= 1


def test_svwar_cannot_tell_real_extensions_from_fake_ones(daemon: GatewayProcess) -> None:
    scans = Sipvicious(sip_port(daemon))
    extensions = ",".join(REAL + FAKE)
    with RingWatch(daemon) as watch:
        runs = [
            scans.svwar(extensions, method="REGISTER"),
            scans.svwar(extensions, method="REGISTER", force=True),
            scans.svwar(extensions, method="INVITE", force=True),
            scans.svwar(extensions, method="OPTIONS", force=True),
        ]
        answers = {(method, ext): normalise(probe(sip_port(daemon), method, ext, i), ext)
                   for i, (method, ext) in enumerate(
                       (m, e) for m in ("REGISTER", "INVITE", "OPTIONS") for e in REAL + FAKE)}
    for run in runs:
        table = run.table()
        if run.found_nothing or not table:
            continue
        # If svwar lists anything, it must list real and fake alike.
        verdicts = {ext: table.get(ext) for ext in REAL + FAKE}
        assert len(set(verdicts.values())) == 1, f"{verdicts}\n{scans.transcript()}"
    for method in ("REGISTER", "INVITE", "OPTIONS"):
        shapes = {answers[(method, ext)] for ext in REAL + FAKE}
        assert len(shapes) == 1, f"{method}: answers differ:\n" + "\n---\n".join(shapes)
        [shape] = shapes
        assert shape.startswith("SIP/2.0 401 "), shape
        assert not any(number in shape for number in REAL), shape
    assert_no_call(daemon, watch, scans)
    hosts = fail2ban_hosts(daemon.log_path)
    assert len(hosts) > 0 and set(hosts) == {TARGET_HOST}


def test_svcrack_is_rate_limited_and_cracks_nothing(daemon: GatewayProcess) -> None:
    scans = Sipvicious(sip_port(daemon))
    started = time.monotonic()
    with RingWatch(daemon) as watch:
        run = scans.svcrack(REAL[0], "1000-1300", give_up_after=5)
        assert run.found_nothing and not run.table(), scans.transcript()
        if "Unknown algorithm: sha-256" in run.output:
            # sipvicious answers only the first challenge, and ours is SHA-256 (RFC 8760):
            # it gives up before guessing, so guess the way it would, over MD5
            statuses = [md5_guess(sip_port(daemon), REAL[0], f"{1000 + i}", i)
                        for i in range(8)]
            assert statuses == [403] * 5 + [None] * 3, statuses
        else:
            # svcrack itself reports that the daemon went quiet on it
            assert "since we last received a response" in run.output, scans.transcript()
    elapsed = time.monotonic() - started
    limited = security_lines(daemon, "rate-limited")
    assert limited, daemon.log_text()[-3000:]
    assert 'bucket="auth-failure"' in limited[0]
    # a handful of guesses were heard, not hundreds (burst 5, then one a minute)
    failures = security_lines(daemon, "auth-failure")
    assert 1 <= len(failures) <= 5 + int(elapsed / 60) + 1, failures
    assert_no_call(daemon, watch, scans)
    hosts = fail2ban_hosts(daemon.log_path)
    assert len(hosts) >= len(failures) + len(limited)
    assert set(hosts) == {TARGET_HOST}
