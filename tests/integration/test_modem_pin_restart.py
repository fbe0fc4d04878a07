"""Issue 7 must-hold 1 through the daemon, across a restart: a wrong SIM PIN is tried once
and never again, not by the same daemon after the module re-enumerates (see
test_modem_scenarios.py) and not by the next daemon either; a SIM in PUK state is reported in
`branchline status --json` with no PIN or PUK sent. The PIN appears in no log line, no status
JSON and not in the state file that remembers the refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hal.sim.modem import ModemEmulator

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

WRONG_IMEI = "867698041239901"
PUK_IMEI = "862636050009902"
SIM_PIN = "4862"  # what the emulated SIMs want
WRONG_PIN = "7319"  # what the config says


def _status(gw: GatewayProcess) -> tuple[str, dict[str, dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "status", "--json", "--control", gw.control_path],
        capture_output=True, text=True, timeout=20, check=True)
    return done.stdout, {m["name"]: m for m in json.loads(done.stdout)["modems"]}


def _verdicts(gw: GatewayProcess) -> None:
    deadline = time.monotonic() + 15.0
    while not all(m["sim"]["state"] not in (None, "checking")
                  for m in gw.status()["modems"]):
        if time.monotonic() > deadline:
            raise AssertionError(f"no SIM verdicts: {gw.status()['modems']}")
        time.sleep(0.1)


def test_a_wrong_pin_is_not_tried_again_after_a_daemon_restart_and_puk_is_reported(
        tmp_path: Path) -> None:
    wrong = ModemEmulator("ec25", imei=WRONG_IMEI, pin=SIM_PIN).start()
    blocked = ModemEmulator("sim7600", imei=PUK_IMEI, pin=SIM_PIN).start()
    sip_port = free_port()
    try:
        blocked.unplug()
        with blocked._lock:  # three wrong PINs from someone else: the SIM wants its PUK
            blocked.core.pin_attempts = 0
        blocked.replug()
        config = f"""
gateway:
  name: gsm-gw
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
lines: []
modems:
  - name: wrongpin
    profile: quectel-ec25
    port: {wrong.at_path}
    pin: "{WRONG_PIN}"
    audio: {{type: serial-pcm, pcm_port: {wrong.pcm_path}}}
  - name: puk
    profile: simcom-sim7600
    port: {blocked.at_path}
    pin: "{SIM_PIN}"
    audio: {{type: serial-pcm, pcm_port: {blocked.pcm_path}}}
"""
        gw = GatewayProcess(tmp_path, config)
        texts: list[str] = []
        try:
            for run in ("first", "after restart"):
                gw.start()
                _verdicts(gw)
                text, m = _status(gw)
                texts.append(text)
                assert m["wrongpin"]["sim"]["state"] == "pin-rejected", (run, m["wrongpin"])
                assert "2 tries left" in m["wrongpin"]["sim"]["detail"], run
                assert m["wrongpin"]["state"] == "sim-error"
                assert m["puk"]["sim"]["state"] == "puk-required", (run, m["puk"])
                assert "10 tries left" in m["puk"]["sim"]["detail"]
                # One try in all, by the first daemon: the counter dropped by exactly one.
                assert wrong.core.pin_attempts == 2, run
                assert wrong.at_log.count(b'AT+CPIN="') == 1, run
                assert b"AT+CPIN=" not in blocked.at_log and b"AT+CPUK" not in blocked.at_log
                assert blocked.core.puk_attempts == 10
                gw.stop()
        finally:
            gw.stop()
        state_files = "".join(p.read_text(errors="replace")
                              for p in (tmp_path / "state").rglob("*") if p.is_file()
                              and p.suffix in (".json", ".txt", ".log", ""))
        for secret in (WRONG_PIN, SIM_PIN):
            assert secret not in gw.log_text()
            assert all(secret not in t for t in texts)
            assert secret not in state_files
    finally:
        wrong.stop()
        blocked.stop()
        release(sip_port)
