"""Caller ID in the running daemon: phone 1 calls phone 2 on the simulated FXS lines, and
what phone 2's earpiece carried while it rang is decoded by Debian's minimodem (Bell 202)
or by our FXO decoder (V.23 before the first ring, UK profile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import wave
from pathlib import Path

import pytest

from gateway.dsp.callerid_rx import decode_fsk

from .gateway_proc import GatewayProcess
from .peers.ports import free_port

pytestmark = pytest.mark.slow


def config(port: int, country: str, method: str | None) -> str:
    option = f"\n    options: {{callerid: {method}}}" if method else ""
    return f"""\
gateway: {{name: cid, country: {country}}}
sip: {{listen: "127.0.0.1:{port}"}}
trunks: []
lines:
  - {{name: "1", backend: sim, number: "101", display_name: Alice}}
  - name: "2"
    backend: sim
    number: "102"{option}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: '1\\d\\d', to: local}}
"""


def ring_and_record(tmp_path: Path, country: str, method: str | None, seconds: float) -> Path:
    gw = GatewayProcess(tmp_path, config(free_port(), country, method))
    gw.start()
    ear = tmp_path / "ear.wav"
    try:
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        # Record from before the call, so caller ID sent before the first ring is caught.
        rec = threading.Thread(target=gw.phone, args=("2", "record"),
                               kwargs={"path": str(ear), "seconds": seconds})
        rec.start()
        gw.phone("1", "dial", digits="102")
        gw.wait_until("phone 2 rings", lambda: gw.line("2")["state"] == "ringing")
        rec.join(timeout=seconds + 10)
        assert ear.exists()
        gw.phone("1", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
    return ear


def test_bellcore_caller_id_from_the_daemon_decodes_with_minimodem(tmp_path: Path) -> None:
    binary = shutil.which("minimodem")
    if binary is None:
        if os.environ.get("BRANCHLINE_REQUIRE_PEERS") == "1":
            pytest.fail("minimodem is not installed (tools/install-test-deps.sh)")
        pytest.skip("minimodem is not installed")
    ear = ring_and_record(tmp_path, "US", None, 4.5)
    out = subprocess.run([binary, "--rx", "-q", "-f", str(ear), "callerid"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "Phone: 101" in out and "Name:  Alice" in out, out


def test_uk_caller_id_goes_before_the_first_ring(tmp_path: Path) -> None:
    ear = ring_and_record(tmp_path, "UK", None, 2.5)
    with wave.open(str(ear)) as w:
        pcm = w.readframes(w.getnframes())
    got = decode_fsk(pcm, "v23")
    assert got is not None and (got.number, got.name) == ("101", "Alice")
