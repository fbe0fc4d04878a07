"""Helpers for the operator-facing transport tests: a small daemon config, raw SIP requests,
and a reader for a `branchline trace` child process's output."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def daemon_yaml(tmp: Path, sip_port: int, trunk_port: int, *, tcp: bool = False,
                extra_sip: str = "") -> str:
    """No lines; one trunk at the test's own socket 127.0.0.1:`trunk_port` (so the security
    filter trusts it and answers OPTIONS without a challenge). The trunk has `keepalive: none`:
    the test's socket reads only the answers to what it sends, so the trunk-health OPTIONS
    probes must not reach it."""
    tcp_line = f"  tcp_listen: 127.0.0.1:{sip_port}\n" if tcp else ""
    return (
        f"gateway:\n  name: ops-gw\n  state_dir: {tmp / 'state'}\n"
        f"sip:\n  listen: 127.0.0.1:{sip_port}\n{tcp_line}  rtp_ports: 33000-33999\n"
        f"{extra_sip}"
        f"trunks:\n  - name: tester\n    registrar: 127.0.0.1:{trunk_port}\n    expires: 3600\n"
        "    keepalive: none\n"
        "lines: []\n"
    )


def options(call_id: str, src: tuple[str, int], dest: tuple[str, int], *, branch: str,
            transport: str = "UDP", extra: str = "") -> bytes:
    """One OPTIONS request from `src` to `dest`; `extra` is more header lines (CRLF-ended)."""
    host, port = src
    return (
        f"OPTIONS sip:{dest[0]}:{dest[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{host}:{port}>;tag=t{branch}\r\n"
        f"To: <sip:{dest[0]}:{dest[1]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class TraceWatch:
    """`python -m gateway.cli trace --json ...` as a child process; reads its JSON lines."""

    def __init__(self, control: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "trace", "--control", control, "--json",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._buf = b""
        self.records: list[dict[str, Any]] = []

    def read_until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Read records until one satisfies `predicate`; raises AssertionError on timeout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.strip():
                    self.records.append(json.loads(line))
            for record in self.records[seen:]:
                if predicate(record):
                    return record
            seen = len(self.records)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._buf += chunk
        raise AssertionError(f"no matching trace record within {timeout} s; got "
                             f"{[r.get('call_id') for r in self.records]}; stderr: "
                             f"{self.stop_output()}")

    def stop(self) -> int:
        """Ctrl-C, as an admin would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def stop_output(self) -> str:
        self.stop()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def udp_socket(port: int) -> socket.socket:
    """A UDP socket on 127.0.0.1:`port` with a receive timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(5.0)
    return sock
