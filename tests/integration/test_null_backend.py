"""The `null` line backend in the real daemon, as bench/media.py uses it: sipp (the trunk)
calls two null lines at once, each answers by itself and says its 1 kHz tone, sipp echoes
the RTP back, and `branchline status` shows both calls' media and quality figures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.media import FIRST_NUMBER, gateway_config, sipp_scenario

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, free_sip_port
from .peers.sipp import sipp_binary

pytestmark = [pytest.mark.peers]


def test_two_null_lines_answer_sipp_and_carry_media(tmp_path: Path) -> None:
    sipp = require_binary("sipp", sipp_binary())
    sipp_port, gw_port = free_sip_port(), free_port()
    gw = GatewayProcess(tmp_path, gateway_config(2, gw_port, sipp_port, tmp_path / "state"))
    csv = tmp_path / "lines.csv"
    csv.write_text(f"SEQUENTIAL\n{FIRST_NUMBER}\n{FIRST_NUMBER + 1}\n")
    argv = [sipp, "-sf", str(sipp_scenario(tmp_path)), "-inf", str(csv), "-i", "127.0.0.1",
            "-p", str(sipp_port), "-mi", "127.0.0.1", "-mp", str(free_port()), "-t", "u1",
            "-nostdin", "-aa", "-rtp_echo", "-m", "2", "-l", "2", "-r", "2", "-d", "4000",
            "-timeout", "30s", "-timeout_error", f"127.0.0.1:{gw_port}"]
    gw.start()
    peer = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def both_flowing() -> bool:
            calls = gw.status()["calls"]
            return len(calls) == 2 and all(
                c["stats"].get("packets_received", 0) > 50 for c in calls)

        gw.wait_until("two calls with echoed RTP", both_flowing, timeout=10, interval=0.2)
        calls = gw.status()["calls"]
        lines = {name: gw.line(name)["state"] for name in ("n0", "n1")}
        code = peer.wait(timeout=30)
    finally:
        if peer.poll() is None:
            peer.kill()
        gw.stop()
    assert code == 0, f"sipp exited {code}"
    assert lines == {"n0": "connected", "n1": "connected"}, lines
    for call in calls:
        st = call["stats"]
        assert st["packets_sent"] > 50 and st["lost"] == 0, st
        assert 1.0 <= st["mos"] <= 4.42 and "jb_delay_mean_ms" in st, st
