"""`branchline status --json` shows every modem's signal, operator, technology, SIM state and
IMEI (issue 7, must-hold 3), read by the real daemon from emulated modules over their ptys.

Two emulated modules of different dialects (an EC25 and a SIM7600, each with its own IMEI)
and one configured modem that is not there: the daemon starts anyway, reports the absent one
as such, and keeps the SIM PIN out of its log. Signal loss reaches status through the
registration URC (no need to wait for the 10 s poll).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hal.sim.modem import ModemEmulator

from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release

EC25_IMEI = "867698041234567"
SIM7600_IMEI = "862636050000123"


@pytest.fixture
def modems() -> Iterator[tuple[ModemEmulator, ModemEmulator]]:
    ec25 = ModemEmulator("ec25", imei=EC25_IMEI).start()
    sim7600 = ModemEmulator("sim7600", imei=SIM7600_IMEI).start()
    try:
        yield ec25, sim7600
    finally:
        ec25.stop()
        sim7600.stop()


def _cli(gw: GatewayProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--control", gw.control_path],
        capture_output=True, text=True, timeout=20, check=True,
    )
    return done.stdout


def _by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in status["modems"]}


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_status_json_shows_each_modems_signal_operator_technology_sim_and_imei(
    tmp_path: Path, modems: tuple[ModemEmulator, ModemEmulator]
) -> None:
    ec25, sim7600 = modems
    sip_port = free_port()
    config = f"""
gateway:
  name: gsm-gw
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
lines:
  - name: "1"
    backend: sim
    number: "101"
gsm_groups:
  - name: mobile
modems:
  - name: lte1
    profile: quectel-ec25
    port: {ec25.at_path}
    audio: {{type: serial-pcm, pcm_port: {ec25.pcm_path}}}
    group: mobile
  - name: lte2
    profile: simcom-sim7600
    port: {sim7600.at_path}
    audio: {{type: serial-pcm, pcm_port: {sim7600.pcm_path}}}
    group: mobile
  - name: gone
    profile: sim
    port: socket://127.0.0.1:9
    pin: "4821"
    group: mobile
"""
    gw = GatewayProcess(tmp_path, config)
    try:
        gw.start()

        def both_polled() -> bool:
            m = _by_name(json.loads(_cli(gw, "status", "--json")))
            return all(m[n]["network"]["operator"] and m[n]["signal"]["rssi_dbm"] is not None
                       for n in ("lte1", "lte2"))

        _wait("both modems up and polled", both_polled, 15.0)
        status = json.loads(_cli(gw, "status", "--json"))
        m = _by_name(status)
        assert set(m) == {"lte1", "lte2", "gone"}
        for name, imei, profile in (("lte1", EC25_IMEI, "quectel-ec25"),
                                    ("lte2", SIM7600_IMEI, "simcom-sim7600")):
            entry = m[name]
            assert entry["state"] == "up", entry
            assert entry["imei"] == imei
            assert entry["profile"] == profile
            assert entry["sim"]["state"] == "ready"
            assert entry["network"]["registration"] == "home"
            assert entry["network"]["operator"] == "Telekom.de"
            assert entry["network"]["technology"] == "LTE"
        # The emulator's signal: CSQ 24 is -65 dBm; the EC25 also gives RSRP via AT+QCSQ.
        assert m["lte1"]["signal"]["rssi_dbm"] == -65
        assert m["lte1"]["signal"]["rsrp_dbm"] is not None
        assert m["lte2"]["signal"]["rssi_dbm"] is not None
        assert m["gone"]["state"] == "absent"
        assert m["gone"]["imei"] is None
        assert m["gone"]["last_error"]

        table = _cli(gw, "status")
        assert "Modems" in table
        assert EC25_IMEI in table and SIM7600_IMEI in table
        assert "Telekom.de" in table

        # Signal loss: the +CREG/+CEREG URCs make the driver re-poll at once.
        ec25.signal_loss()

        def lost() -> bool:
            entry = _by_name(gw.status())["lte1"]
            return (entry["network"]["registration"] == "searching"
                    and entry["signal"]["rssi_dbm"] is None)

        _wait("signal loss in status", lost, 5.0)
        entry = _by_name(gw.status())["lte1"]
        assert entry["network"]["operator"] is None
        assert "4821" not in gw.log_text()
    finally:
        gw.stop()
        release(sip_port)


def test_status_json_reports_a_wrong_pin_tried_once_and_a_puk_locked_sim(tmp_path: Path) -> None:
    wrong = ModemEmulator("ec25", imei=EC25_IMEI, pin="1111").start()
    blocked = ModemEmulator("sim7600", imei=SIM7600_IMEI, pin="1111").start()
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
    pin: "2222"
    audio: {{type: serial-pcm, pcm_port: {wrong.pcm_path}}}
  - name: puk
    profile: simcom-sim7600
    port: {blocked.at_path}
    pin: "1111"
    audio: {{type: serial-pcm, pcm_port: {blocked.pcm_path}}}
"""
        gw = GatewayProcess(tmp_path, config)
        try:
            gw.start()
            _wait("SIM verdicts", lambda: all(
                m["sim"]["state"] not in (None, "checking") for m in gw.status()["modems"]),
                15.0)
            m = _by_name(json.loads(_cli(gw, "status", "--json")))
            assert m["wrongpin"]["sim"]["state"] == "pin-rejected"
            assert "2 tries left" in m["wrongpin"]["sim"]["detail"]
            assert m["wrongpin"]["state"] == "sim-error"
            assert m["puk"]["sim"]["state"] == "puk-required"
            assert m["puk"]["state"] == "sim-error"
            assert wrong.core.pin_attempts == 2  # one try, and only one
            assert wrong.at_log.count(b'AT+CPIN="') == 1
            assert b"AT+CPIN=" not in blocked.at_log
            assert blocked.core.puk_attempts == 10
            log = gw.log_text()
            assert "2222" not in log and "1111" not in log
        finally:
            gw.stop()
    finally:
        wrong.stop()
        blocked.stop()
        release(sip_port)
