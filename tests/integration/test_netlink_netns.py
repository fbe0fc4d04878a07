"""gateway/runtime/netlink.py against a real kernel: RouteWatch inside a test namespace.

A WanPair (tests/integration/netns.py) joins a "gw" and a "wan" namespace with a veth pair.
RouteWatch runs inside gw, in a child process that prints, on each change notification,
the verdict for the wan side's address. The WAN is dropped by link down and by a blackhole
route, and restored: each change must be notified, with the reason the issue asks for
("link down: wan0", "no route to ... (blackhole)"), and usable again after the restore.
An nft drop changes no link or route, so netlink must stay quiet about it.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import require_binary
from .netns import WanPair, netns_problem

pytestmark = [pytest.mark.slow]

WATCHER = """
import asyncio, json, sys, time
from gateway.runtime.netlink import RouteWatch
ip = sys.argv[1]

async def main():
    loop = asyncio.get_running_loop()
    def changed():
        print(json.dumps({"t": time.monotonic(), "verdict": watch.check(ip)}), flush=True)
    watch = RouteWatch(loop, changed)
    print(json.dumps({"started": watch.start(), "verdict": watch.check(ip)}), flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    watch.close()

asyncio.run(main())
"""


def _verdicts(proc: subprocess.Popen[str], until: float) -> list[dict[str, Any]]:
    """Lines the watcher printed until `until` (monotonic) or its exit."""
    assert proc.stdout is not None
    out: list[dict[str, Any]] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < until:
        if not sel.select(timeout=max(0.0, until - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


def test_route_watch_reports_link_down_and_blackhole_inside_a_namespace() -> None:
    problem = netns_problem()
    if problem is not None:
        require_binary(f"network namespaces ({problem})", None)
    root = str(Path(__file__).resolve().parents[2])
    with WanPair("nl") as pair:
        proc = pair.gw.popen([sys.executable, "-c", WATCHER, pair.wan_ip, "30"],
                             stdout=subprocess.PIPE, text=True, cwd=root)
        try:
            (first,) = _verdicts(proc, time.monotonic() + 10.0)[:1]
            assert first["started"] is True
            assert first["verdict"] == [True, f"route to {pair.wan_ip} dev wan0"]

            def after(action: Any, settle: float = 1.0) -> list[Any]:
                start = time.monotonic()
                action()
                seen = _verdicts(proc, start + settle)
                assert seen, f"no netlink notification after {action.__name__}"
                return [s["verdict"] for s in seen]

            down = after(pair.link_down)
            assert [False, "link down: wan0"] in down
            up = after(pair.link_up)
            assert up[-1][0] is True
            hole = after(pair.blackhole)
            assert hole[-1] == [False, f"no route to {pair.wan_ip} (blackhole)"]
            back = after(pair.unblackhole)
            assert back[-1][0] is True
            start = time.monotonic()
            pair.nft_drop()
            assert _verdicts(proc, start + 1.0) == []  # no link or route changed
            pair.nft_restore()
            print(f"\nnetlink verdicts: link down {down}, blackhole {hole}")
        finally:
            proc.kill()
            proc.wait()
