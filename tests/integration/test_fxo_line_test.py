"""`branchline line-test` on an exchange line (FXO), on the real daemon with the simulated
exchange, through the real CLI: a healthy line passes loop current, dial tone (frequencies
and level), DTMF out (the exchange's own decoder hears the digits) and release; the same
line unplugged at the wall (the sim control) fails loop current and dial tone, DTMF is not
run, and the CLI exits 1. The line takes calls again afterwards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .gateway_proc import GatewayProcess
from .peers.ports import free_port

CONFIG = """\
gateway: {{name: fxo-lt, country: US, state_dir: {state}}}
sip: {{listen: "127.0.0.1:{port}"}}
trunks: []
lines:
  - {{name: kitchen, backend: sim, number: "101"}}
  - name: pstn
    type: fxo
    backend: sim
    number: "5550100"
    options: {{inbound: "line:kitchen"}}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: '1\\d\\d', to: local}}
"""


def line_test(gw: GatewayProcess, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "line-test", *args, "--control",
         gw.control_path], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_fxo_line_test_passes_a_live_line_and_fails_an_unplugged_one(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, CONFIG.format(port=free_port(), state=tmp_path / "state"))
    gw.start()
    try:
        code, text = line_test(gw, "pstn")
        print(f"\n{text}")
        assert code == 0, text
        assert re.search(r"loop current\s+PASS\s+present \d+ ms after the seize", text), text
        assert re.search(r"dial tone\s+PASS\s+350\+440 Hz at -1[0-9]\.\d/-1[0-9]\.\d dBm0",
                         text), text
        assert re.search(r"DTMF\s+PASS\s+sent 1590, exchange heard 1590, dial tone stopped",
                         text), text
        assert re.search(r"release\s+PASS\s+loop current gone", text), text
        assert "simulated exchange" in text and "PASS: every check passed" in text
        ex = gw.request("fxo", line="pstn")
        assert ex["state"] == "idle" and not ex["exchange"]["off_hook"], ex
        assert ex["exchange"]["calls"][-1]["ended"] == "gateway hung up", ex

        gw.request("fxo", line="pstn", action="unplug")
        code, text = line_test(gw, "5550100", "--json")  # by number, as JSON
        report = json.loads(text[text.index("{"):])
        print(json.dumps(report, indent=1))
        assert code == 1 and report["passed"] is False and report["kind"] == "fxo"
        got = checks(report)
        assert not got["loop current"]["ok"] and "none within 500 ms" in \
            got["loop current"]["figure"]
        assert not got["dial tone"]["ok"] and got["dial tone"]["figure"] == "none: silence"
        assert not got["DTMF"]["ok"] and got["DTMF"]["figure"].startswith("not run")
        assert got["release"]["ok"] and got["release"]["figure"] == "hook relay open"

        # Plugged back in, the line rings the handset again: the test left it as it was.
        gw.request("fxo", line="pstn", action="plug")
        gw.request("fxo", line="pstn", action="ring", caller="5551234", method="bellcore")
        gw.wait_until("the kitchen phone rings",
                      lambda: gw.request("fxo", line="pstn")["state"] == "ringing", timeout=5)
    except BaseException:
        print(gw.log_text()[-4000:])
        raise
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
