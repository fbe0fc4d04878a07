"""Blind transfer between lines of the box, through the real daemon and simulated phones
(issue 12): line 1 talks to line 2, flashes, dials line 3 and hangs up while it rings.
No SIP is involved: the runtime joins line 2 to line 3 itself
(gateway/runtime/transfer_local.py). Each ear is checked by frequency or by the phone's
tone classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from .audio import write_tone_wav
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_fxs_multicall import BOB_HZ, CAROL_HZ, wait_heard

pytestmark = [pytest.mark.slow]

LINES = """
gateway: {{name: test-gw, country: US, state_dir: {state}}}
sip: {{listen: "127.0.0.1:{port}", rtp_ports: 30000-30999}}
lines:
  - {{name: "1", backend: sim, number: "101"}}
  - {{name: "2", backend: sim, number: "102"}}
  - name: "3"
    backend: sim
    number: "103"
    timers: {{ring_no_answer: 5}}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: "1\\\\d\\\\d", to: local}}
"""


def _blind_transfer_to_line_3(gw: GatewayProcess, tmp: Path) -> None:
    """Line 1 talks to line 2 (which sends 600 Hz), then transfers it blind to line 3."""
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits="102")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
    gw.phone("2", "offhook")
    gw.phone("2", "play", path=str(write_tone_wav(tmp / "2.wav", CAROL_HZ, -12.0)))
    wait_heard(gw, tmp, "l2", (CAROL_HZ,))
    gw.phone("1", "flash")
    gw.wait_dial_tone("1")
    gw.phone("1", "dial", digits="103")
    gw.wait_until("line 3 rings", lambda: gw.line("3")["ringing"], timeout=5)
    gw.phone("1", "onhook")  # while line 3 rings: blind transfer
    gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=5)


@pytest.fixture
def gw(tmp_path: Path) -> GatewayProcess:
    proc = GatewayProcess(tmp_path, LINES.format(state=tmp_path / "state", port=free_port()))
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log_text()[-3000:]


def test_blind_transfer_between_local_lines_rings_the_target_and_joins(
        gw: GatewayProcess, tmp_path: Path) -> None:
    _blind_transfer_to_line_3(gw, tmp_path)
    gw.wait_hears("2", "ringback", timeout=5)  # the transferee hears line 3 ringing
    gw.wait_until("line 3 still rings", lambda: gw.line("3")["state"] == "ringing", timeout=3)
    assert not gw.line("1")["ringing"], "line 1 must not be rung back"
    gw.phone("3", "offhook")
    gw.phone("3", "play", path=str(write_tone_wav(tmp_path / "3.wav", BOB_HZ, -12.0)))
    wait_heard(gw, tmp_path, "2-hears-3", (BOB_HZ,), line="2")
    wait_heard(gw, tmp_path, "3-hears-2", (CAROL_HZ,), line="3")
    line1 = gw.line("1")
    assert line1["state"] == "idle" and line1["call_id"] is None and not line1["ringing"]
    assert len(gw.status()["calls"]) == 2  # line 2's leg and line 3's, nothing of line 1
    gw.phone("2", "onhook")
    gw.wait_hears("3", "busy", timeout=5)
    gw.phone("3", "onhook")
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    assert "transferred: line 2 joined to line 3" in gw.log_text()


def test_blind_transfer_not_answered_rings_line_1_back_with_the_call(
        gw: GatewayProcess, tmp_path: Path) -> None:
    """Line 3 rings out (5 s): line 1 rings with the held call and talks to line 2 again."""
    _blind_transfer_to_line_3(gw, tmp_path)
    gw.wait_hears("2", "ringback", timeout=5)
    gw.wait_until("line 1 rung back", lambda: gw.line("1")["state"] == "ringing", timeout=9)
    assert gw.line("3")["state"] == "idle" and not gw.line("3")["ringing"]
    gw.wait_hears("2", "silence", timeout=5)  # no ringback once line 3 gave up
    gw.phone("1", "offhook")
    wait_heard(gw, tmp_path, "1-hears-2-again", (CAROL_HZ,))
    gw.phone("1", "onhook")
    gw.wait_hears("2", "busy", timeout=5)
    gw.phone("2", "onhook")
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)


def test_transferee_hangs_up_while_the_target_rings(
        gw: GatewayProcess, tmp_path: Path) -> None:
    _blind_transfer_to_line_3(gw, tmp_path)
    gw.wait_hears("2", "ringback", timeout=5)
    gw.phone("2", "onhook")
    gw.wait_until("line 3 stops ringing", lambda: gw.line("3")["state"] == "idle", timeout=5)
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    assert gw.line("1")["state"] == "idle" and not gw.line("1")["ringing"]
