"""bench.report end to end on a subset of its benches: it runs them as the full report does,
prints the one table with the gateway beside baresip, and writes report.json and report.png.

The whole `--quick` report takes about 3 minutes on 2 cores, too long for the suite; it is
run by hand (`python -m bench.report --quick`, bench/README.md). This runs rtp_pacing (the
real daemon against baresip, 8 s call), footprint (beside Kamailio and baresip), the baresip
RSS probe and the two storage benches: about 40 s. It asserts that the figures arrived and were judged, never their size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import missing, require_binary
from .peers.baresip import baresip_binary
from .peers.kamailio import kamailio_binary

pytestmark = [pytest.mark.peers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_report_on_a_subset_prints_the_table_and_writes_json_and_png(
        tmp_path: Path) -> None:
    require_binary("baresip", baresip_binary())
    require_binary("kamailio", kamailio_binary())
    if os.geteuid() != 0:  # a missing capability fails like a missing peer, never skips quietly
        missing("bench.rtp_pacing captures on lo with AF_PACKET: needs root")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--quick", "--out", str(out),
         "--only", "rtp_pacing,footprint,report_probes,call_records,sms_queue"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "RTP pacing p99" in text and "baresip:" in text
    assert "benches failed: 0" in text, text
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "quick"
    assert report["machine"]["cores"] == os.cpu_count()
    assert len(report["machine"]["load_after"]) == 3
    rows = {r["figure"]: r for r in report["rows"]}
    p99 = rows["RTP pacing p99"]
    assert p99["gateway"] > 0 and p99["peer"] > 0  # both streams measured in one call
    assert p99["verdict"] in ("met", "MISSED")  # judged against baresip's, not skipped
    assert rows["RSS per call"]["peer"] is not None  # the probe's baresip figure arrived
    assert rows["SMS store, power-cut safe (median)"]["gateway"] > 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "PNG skipped" in text
    else:
        assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
