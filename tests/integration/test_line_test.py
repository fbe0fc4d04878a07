"""`branchline line-test` on the real daemon with simulated lines: a healthy line passes
every check; a line whose hook switch is not wired fails the hook check (and what needs
an off-hook); a line whose earpiece is dead fails the audio checks with the level it saw.
The three run at once, each through the real CLI."""

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
gateway: {{name: lt, country: US}}
sip: {{listen: "127.0.0.1:{port}"}}
trunks: []
lines:
  - {{name: good, backend: sim, number: "101", options: {{bounce_count: 5}}}}
  - {{name: nohook, backend: sim, number: "102", options: {{fault: shk-open}}}}
  - {{name: mute, backend: sim, number: "103", options: {{fault: ear-mute}}}}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: '1\\d\\d', to: local}}
"""


def _cli(gw: GatewayProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "line-test", *args, "--control",
         gw.control_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_line_test_passes_a_good_line_and_names_what_is_broken(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, CONFIG.format(port=free_port()))
    gw.start()
    try:
        good = _cli(gw, "good")
        nohook = _cli(gw, "nohook", "--answer-timeout", "3", "--json")
        mute = _cli(gw, "mute", "--json")
        good_out, good_err = good.communicate(timeout=60)
        nohook_out, _ = nohook.communicate(timeout=60)
        mute_out, _ = mute.communicate(timeout=60)
        after = {name: gw.line(name) for name in ("good", "nohook", "mute")}
        # the line is the line's again: lifting the handset gives dial tone
        gw.phone("good", "offhook")
        gw.wait_hears("good", "dial")
        gw.phone("good", "onhook")
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]

    # healthy: every check PASS, a readable report, exit 0
    assert good.returncode == 0, good_out + good_err
    for name in ("caller ID", "ring", "hook", "dial tone", "DTMF", "audio level"):
        row = next(r for r in good_out.splitlines() if r.strip().startswith(name))
        assert "PASS" in row, good_out
    assert re.search(r"ring +PASS +20 Hz, first burst (1\.9|2\.0|2\.1)\d s", good_out), good_out
    assert "350+440 Hz at -13.0/-13.0 dBm0" in good_out, good_out
    assert "out 1590# -> 1590#, in 2468* -> 2468*" in good_out, good_out
    assert "earpiece -10.0 dBm0, mouthpiece -10.0 dBm0" in good_out, good_out
    assert good_out.rstrip().endswith("PASS: every check passed"), good_out

    # hook switch not wired: the ring is there, no off-hook in 3 s, exit 1
    assert nohook.returncode == 1, nohook_out
    report = json.loads(nohook_out)
    checks = _checks(report)
    assert report["passed"] is False
    assert checks["ring"]["ok"] and checks["caller ID"]["ok"], checks
    assert not checks["hook"]["ok"]
    assert checks["hook"]["figure"] == "no off-hook within 3.0 s", checks["hook"]
    assert not checks["dial tone"]["ok"] and "never went off-hook" in checks["dial tone"]["figure"]

    # earpiece dead: hook and mouthpiece fine, nothing heard, the level says so
    assert mute.returncode == 1, mute_out
    checks = _checks(json.loads(mute_out))
    assert checks["ring"]["ok"] and checks["hook"]["ok"], checks
    for name in ("caller ID", "dial tone", "DTMF", "audio level"):
        assert not checks[name]["ok"], checks[name]
    ear = float(checks["audio level"]["figure"].split("earpiece ")[1].split(" dBm0")[0])
    assert ear < -60.0, checks["audio level"]
    assert "mouthpiece -10.0 dBm0" in checks["audio level"]["figure"], checks["audio level"]
    assert "out 1590# -> -, in 2468* -> 2468*" == checks["DTMF"]["figure"], checks["DTMF"]

    for name, state in after.items():
        assert state["state"] == "idle" and state["hook"] == "on", (name, state)
