"""A 20,000-datagram flood of random and mutated SIP during a connected local call.

The call (phone 1 -> phone 2, phone 1 playing 440 Hz) must sound the same after the flood
as before it, the daemon must still answer `status`, and its memory must stay bounded.
Figures are printed (run with -s): datagrams/s, responses, RSS before and after.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import pytest

from .flood import (
    connect_local_call,
    flood_datagrams,
    gateway_yaml,
    hang_up,
    pick_loopback,
    rss_kib,
    run_flood,
    torture_messages,
)
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow

FLOOD_DATAGRAMS = 20_000
FLOOD_SECONDS = 60.0


def _measure(gw: GatewayProcess, tmp: Path, name: str) -> tuple[float, float]:
    rec = tmp / f"{name}.wav"
    gw.phone("2", "record", path=str(rec), seconds=1.5)
    return wav_tone(rec)


def test_flood_during_call_keeps_audio_daemon_and_memory(tmp_path: Path) -> None:
    host = pick_loopback([])
    trunk_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk_sock.bind((host, 0))
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_yaml(tmp_path, sip_port, host,
                                               trunk_sock.getsockname()[1]))
    gw.start()
    socks: list[socket.socket] = [trunk_sock]
    try:
        # Four more senders: one more on the trusted address, three from strangers.
        for src in (host, "127.0.0.1", pick_loopback([]), pick_loopback([])):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            socks.append(s)
        assert gw._proc is not None  # noqa: SLF001 - the pid is all we need
        pid = gw._proc.pid  # noqa: SLF001

        connect_local_call(gw, tmp_path, 440.0, -12.0)
        time.sleep(0.5)
        hz0, db0 = _measure(gw, tmp_path, "before")
        assert abs(hz0 - 440.0) <= 0.02 * 440.0, (hz0, db0)
        rss0 = rss_kib(pid)
        sip0 = dict(gw.status().get("sip", {}))

        rng = random.Random(4475)
        seeds = list(torture_messages().values())
        data = flood_datagrams(FLOOD_DATAGRAMS, seeds, "127.0.0.1", f"{host}:5060", rng)
        base = int(sip0.get("received", 0))

        def processed() -> int:
            return int(gw.status().get("sip", {}).get("received", 0)) - base

        report = run_flood(data, ("127.0.0.1", sip_port), socks, max_seconds=FLOOD_SECONDS,
                           processed=processed if "received" in sip0 else None)
        rss1 = rss_kib(pid)

        assert gw.running, gw.log_text()[-4000:]
        status = gw.status()  # the control socket still answers
        sip1 = dict(status.get("sip", {}))
        assert gw.line("1")["state"] == gw.line("2")["state"] == "connected", status["lines"]
        hz1, db1 = _measure(gw, tmp_path, "after")
        rss2 = rss_kib(pid)

        print(
            f"\nflood: {report.sent} datagrams in {report.seconds:.1f} s "
            f"({report.rate:.0f}/s), {report.send_errors} send errors, "
            f"{sip1.get('received', 0) - sip0.get('received', 0)} taken in by the daemon, "
            f"{report.responses} responses {dict(sorted(report.statuses.items()))}\n"
            f"audio before: {hz0:.1f} Hz {db0:.1f} dBFS; after: {hz1:.1f} Hz {db1:.1f} dBFS\n"
            f"RSS before {rss0} KiB, right after {rss1} KiB, after recording {rss2} KiB "
            f"(growth {(max(rss1, rss2) - rss0) / 1024:.1f} MiB)\n"
            f"sip stats before {sip0}\nsip stats after {sip1}"
        )
        assert report.sent >= FLOOD_DATAGRAMS or report.seconds >= FLOOD_SECONDS
        assert abs(hz1 - hz0) <= 0.02 * hz0, (hz0, hz1)
        assert abs(db1 - db0) <= 3.0, (db0, db1)
        assert max(rss1, rss2) - rss0 < 30 * 1024, (rss0, rss1, rss2)
        if sip1:
            assert sip1.get("internal_errors", 0) == 0, sip1
            # Most of the flood reached the SIP code (UDP may still drop a few).
            assert sip1.get("received", 0) - sip0.get("received", 0) >= 0.9 * report.sent
        sizes = status.get("sip_tables")  # exposed once the lead wires UA.table_sizes()
        if isinstance(sizes, dict):
            assert sizes.get("server_transactions", 0) <= 1000, sizes
            # Mutated INVITEs from the trunk address are real calls until rejected and
            # their Timer H runs out; the UA's own cap (500) bounds them.
            assert sizes.get("calls", 0) <= 500, sizes
        hang_up(gw)
    finally:
        for s in socks:
            s.close()
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])
