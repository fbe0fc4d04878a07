"""Small measurements `bench.report` needs that no other bench takes: baresip's RSS per call.

    .venv/bin/python -m bench.report_probes [--calls 4] [--settle 2]

One baresip (the callee, auto-answer) is started, its RSS read when idle; then other
baresips call it, `--calls` at once (a baresip phone holds several calls), and its RSS is
read again with all calls up. RSS per call = (in calls - idle) / calls. Prints one JSON
line. Everything stays on 127.0.0.1; needs baresip (`baresip-core`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.sip_peers import rss_kib


def baresip_rss(calls: int, settle: float, workdir: Path) -> dict[str, float | int | None]:
    from tests.integration.peers.baresip import Baresip
    from tests.integration.peers.ports import free_port, free_sip_port

    callee = Baresip("300", sip_port=free_sip_port(), ctrl_port=free_port(), tmpdir=workdir,
                     tone=440, answer_mode="auto", record=False)
    callers = [Baresip(f"20{i}", sip_port=free_sip_port(), ctrl_port=free_port(),
                       tmpdir=workdir, tone=1000, record=False) for i in range(calls)]
    try:
        callee.start()
        time.sleep(settle)
        proc = callee._proc
        assert proc is not None
        idle = rss_kib(proc.pid)
        for caller in callers:
            caller.start()
            caller.dial(callee.direct_uri)
        for caller in callers:
            caller.wait_for_event("CALL_ESTABLISHED", timeout=15)
        time.sleep(settle)
        busy = rss_kib(proc.pid)
        for caller in callers:
            caller.hangup()
    finally:
        for caller in callers:
            caller.stop()
        callee.stop()
    per_call = (busy - idle) / calls if idle is not None and busy is not None else None
    return {"calls": calls, "idle_rss_kib": idle, "calls_rss_kib": busy,
            "rss_per_call_kib": per_call}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    try:
        result = baresip_rss(args.calls, args.settle, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"baresip RSS idle {result['idle_rss_kib']} KiB, with {args.calls} calls "
          f"{result['calls_rss_kib']} KiB", file=sys.stderr)
    print(json.dumps({"bench": "report_probes", "baresip": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
