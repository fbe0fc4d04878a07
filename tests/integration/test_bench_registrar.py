"""bench/registrar --quick runs end to end against both registrars with zero failures.

50 phones register with digest through sipp, re-register, then callers call registered
callees through the gateway's survivable registrar (B2BUA) and through Kamailio. This checks
that the bench measures what it says (every step counted, no failure anywhere, the callees'
side agreeing) and that the product path holds at these low rates; it asserts nothing on
speed (the figures are the bench's to print).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_binary
from .peers.kamailio import kamailio_binary

pytestmark = [pytest.mark.peers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_has_zero_failures_against_gateway_and_kamailio() -> None:
    require_binary("sipp", shutil.which("sipp"))
    require_binary("kamailio", kamailio_binary())
    proc = subprocess.run([sys.executable, "-m", "bench.registrar", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["phones"] == 50
    for peer in ("gateway", "kamailio"):
        data = result["peers"][peer]
        assert data["error"] is None and data["alive_at_end"], (peer, data["error"])
        kinds = [s["kind"] for s in data["steps"]]
        # Both ladders ran to their top rung: nothing failed, so no repair pass either.
        assert kinds == ["register", "re-register", "calls", "calls"], (peer, kinds)
        for step in data["steps"]:
            uac = step["uac"]
            assert step["clean"], (peer, step)
            assert uac["failed"] == 0 and uac["successful"] == uac["created"] == step["planned"]
            if step["kind"] == "calls":
                # Every call reached a registered callee and was answered there.
                assert step["uas"]["failed"] == 0
                assert step["uas"]["successful"] == uac["successful"], (peer, step)
    assert "goal: gateway >= 200 registrations/s" in proc.stdout
