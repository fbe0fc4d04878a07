"""A dial-plan route whose target is `line:<name>`: dialling 0 rings the reception line by
name (whatever its number), through the daemon, with audio both ways checked by frequency."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .audio import write_tone_wav
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow


def config(tmp: Path) -> str:
    return f"""
gateway:
  name: route-line
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{free_port()}
  rtp_ports: 31000-31999
lines:
  - name: desk
    backend: sim
    number: "101"
  - name: reception
    backend: sim
    number: "150"
dialplan:
  digit_map: "(0|1xx|8xxx)"
  routes:
    - pattern: "0"
      to: line:reception
    - pattern: "8\\\\d+"
      to: gsm:mobiles
    - pattern: "1\\\\d\\\\d"
      to: local
"""


def test_route_to_line_by_name_rings_it_and_carries_audio_both_ways(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, config(tmp_path))
    gw.start()
    try:
        gw.phone("desk", "offhook")
        gw.wait_hears("desk", "dial")
        gw.phone("desk", "dial", digits="0")
        gw.wait_until("reception rings", lambda: gw.line("reception")["ringing"])
        gw.wait_hears("desk", "ringback")
        gw.phone("reception", "offhook")
        gw.wait_until("both connected", lambda: gw.line("desk")["state"]
                      == gw.line("reception")["state"] == "connected")
        remotes = sorted(c["remote"] for c in gw.status()["calls"])
        assert remotes == ["101", "150"], remotes  # the caller sees the line's own number

        gw.phone("desk", "play", path=str(write_tone_wav(tmp_path / "a.wav", 600.0, -12.0)))
        gw.phone("reception", "play",
                 path=str(write_tone_wav(tmp_path / "b.wav", 1400.0, -12.0)))
        time.sleep(0.5)
        gw.phone("reception", "record", path=str(tmp_path / "at_rx.wav"), seconds=1.0)
        gw.phone("desk", "record", path=str(tmp_path / "at_desk.wav"), seconds=1.0)
        hz_rx, db_rx = wav_tone(tmp_path / "at_rx.wav")
        hz_desk, db_desk = wav_tone(tmp_path / "at_desk.wav")
        assert abs(hz_rx - 600.0) <= 0.02 * 600.0 and abs(db_rx + 12.0) <= 3.0, (hz_rx, db_rx)
        assert abs(hz_desk - 1400.0) <= 0.02 * 1400.0 and abs(db_desk + 12.0) <= 3.0, \
            (hz_desk, db_desk)

        gw.phone("desk", "onhook")
        gw.wait_hears("reception", "busy")
        gw.phone("reception", "onhook")
        gw.wait_until("both idle", lambda: gw.line("desk")["state"]
                      == gw.line("reception")["state"] == "idle")
        assert not gw.status()["calls"]

        # A GSM group target is accepted by check-config, but no GSM port exists yet: the
        # caller hears reorder at once and the log says why.
        gw.phone("desk", "offhook")
        gw.wait_hears("desk", "dial")
        gw.phone("desk", "dial", digits="8123")
        gw.wait_hears("desk", "reorder")
        gw.wait_until("refusal logged", lambda: "no GSM group 'mobiles'" in gw.log_text())
        gw.phone("desk", "onhook")
        assert not gw.status()["calls"]
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
