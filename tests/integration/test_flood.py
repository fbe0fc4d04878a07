"""A 40,000-datagram flood of random and mutated SIP during a connected trunk call.

Line 1 calls baresip through Kamailio (the trunk). baresip sends 1000 Hz and the handset
plays 440 Hz, so RTP flows both ways through the daemon. The flood then hits the SIP port
from four sources: one on the trunk's own IP address (another port, so not trusted) and
three strangers. While it runs, the call's RTP must keep arriving on both sides, at the
same frequency and level as before the flood: the handset is recorded during the flood,
and baresip's recording of what it received is cut to the flood's time window. The daemon
must still answer `status`, and its memory must stay bounded.
Figures are printed (run with -s): datagrams/s, responses, RTP counters, RSS.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .audio import active_segment, dominant_frequency, level_dbfs, read_wav, write_tone_wav
from .conftest import BaresipFactory, KamailioFactory
from .flood import FloodReport, flood_datagrams, pick_loopback, rss_kib, run_flood, torture_messages
from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .test_first_call import LINE_PASS, LINE_USER, call_auto_answering_bob, gateway_config, wav_tone

pytestmark = [pytest.mark.peers, pytest.mark.slow]

FLOOD_DATAGRAMS = 40_000
FLOOD_SECONDS = 60.0
BOB_HZ = 1000.0
HANDSET_HZ = 440.0
HANDSET_DBFS = -12.0
FRAME = 0.02


def _record(gw: GatewayProcess, tmp: Path, name: str) -> tuple[float, float]:
    """What the handset hears (baresip's RTP, decoded by the daemon) over 1.5 s."""
    rec = tmp / f"{name}.wav"
    gw.phone("1", "record", path=str(rec), seconds=1.5)
    return wav_tone(rec)


def _rtp(gw: GatewayProcess) -> dict[str, Any]:
    calls = gw.status()["calls"]
    assert len(calls) == 1, calls
    return dict(calls[0]["stats"])


def _window(path: Path, start: float, end: float) -> tuple[float, float, float]:
    """(Hz, dBFS, share of 20 ms frames below -40 dBFS) of a recording between two times."""
    samples, rate = read_wav(path)
    part = samples[int(start * rate): int(end * rate)]
    assert len(part) > rate, f"{path}: only {len(part) / rate:.1f} s between {start} and {end}"
    step = int(FRAME * rate)
    frames = [part[i:i + step] for i in range(0, len(part) - step + 1, step)]
    quiet = sum(1 for f in frames if level_dbfs(f) < -40.0) / len(frames)
    active = active_segment(part, rate, threshold=-45.0)
    return dominant_frequency(active, rate), level_dbfs(active), quiet


def test_flood_during_trunk_call_keeps_rtp_audio_daemon_and_memory(
        tmp_path: Path, kamailio_factory: KamailioFactory, baresip_factory: BaresipFactory
) -> None:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(trunk, sip_port, tmp_path))
    gw.start()
    socks: list[socket.socket] = []
    try:
        # One sender on the trunk's IP (not its port: not trusted), three strangers.
        for src in ("127.0.0.1", pick_loopback([]), pick_loopback([]), pick_loopback([])):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            socks.append(s)
        assert gw._proc is not None  # noqa: SLF001 - the pid is all we need
        pid = gw._proc.pid  # noqa: SLF001

        bob = call_auto_answering_bob(trunk, gw, baresip_factory)
        established = time.monotonic()
        wav = write_tone_wav(tmp_path / "tone-440.wav", HANDSET_HZ, HANDSET_DBFS, seconds=600.0)
        gw.phone("1", "play", path=str(wav))
        time.sleep(1.0)
        hz0, db0 = _record(gw, tmp_path, "before")
        assert abs(hz0 - BOB_HZ) <= 0.02 * BOB_HZ, (hz0, db0)
        rss0 = rss_kib(pid)
        sip0 = dict(gw.status().get("sip", {}))
        rtp0 = _rtp(gw)

        rng = random.Random(4475)
        data = flood_datagrams(FLOOD_DATAGRAMS, list(torture_messages().values()), "127.0.0.1",
                               "127.0.0.1:5060", rng)
        base = int(sip0.get("received", 0))
        report = FloodReport()

        def processed() -> int:
            return int(gw.status().get("sip", {}).get("received", 0)) - base

        def flood() -> None:
            nonlocal report
            report = run_flood(data, ("127.0.0.1", sip_port), socks, max_seconds=FLOOD_SECONDS,
                               processed=processed)

        flooder = threading.Thread(target=flood, name="flood")
        flood_start = time.monotonic()
        flooder.start()
        time.sleep(0.5)
        # During the flood: the handset still hears baresip's RTP, as before.
        during: list[tuple[float, float]] = []
        rtp_during: list[dict[str, Any]] = []
        while flooder.is_alive() and len(during) < 3:
            t0 = time.monotonic()
            rtp_a = _rtp(gw)
            during.append(_record(gw, tmp_path, f"during-{len(during)}"))
            rtp_b = _rtp(gw)
            rtp_during.append({k: (rtp_b[k] - rtp_a[k]) / (time.monotonic() - t0)
                               for k in ("packets_received", "packets_sent")})
        flooder.join(FLOOD_SECONDS + 30)
        flood_end = time.monotonic()
        assert report.sent > 0 and not flooder.is_alive()
        rss1 = rss_kib(pid)

        assert gw.running, gw.log_text()[-4000:]
        status = gw.status()  # the control socket still answers
        sip1 = dict(status.get("sip", {}))
        assert gw.line("1")["state"] == "connected", status["lines"]
        rtp1 = _rtp(gw)
        hz1, db1 = _record(gw, tmp_path, "after")
        rss2 = rss_kib(pid)
        gw.phone("1", "onhook")
        bob.wait_for_event("CALL_CLOSED", timeout=10)

        # baresip's side: what it received during the flood (its recording starts at answer).
        rec = bob.wait_recordings_closed()[-1]
        bob_hz, bob_db, bob_quiet = _window(rec, flood_start - established + 0.5,
                                            flood_end - established - 0.5)
        _, sent_db = wav_tone(bob.recordings("enc")[-1])
        flood_s = flood_end - flood_start
        print(
            f"\nflood: {report.sent} datagrams in {report.seconds:.1f} s "
            f"({report.rate:.0f}/s), {report.send_errors} send errors, "
            f"{sip1.get('received', 0) - sip0.get('received', 0)} taken in by the daemon, "
            f"{report.responses} responses {dict(sorted(report.statuses.items()))}\n"
            f"handset before: {hz0:.1f} Hz {db0:.1f} dBFS; during: "
            f"{', '.join(f'{h:.1f} Hz {d:.1f} dBFS' for h, d in during)}; "
            f"after: {hz1:.1f} Hz {db1:.1f} dBFS\n"
            f"baresip heard during the flood: {bob_hz:.1f} Hz {bob_db:.1f} dBFS, "
            f"{100 * bob_quiet:.1f}% of 20 ms frames quiet\n"
            f"RTP/s during: {rtp_during}; over the flood ({flood_s:.1f} s): received "
            f"{rtp1['packets_received'] - rtp0['packets_received']}, sent "
            f"{rtp1['packets_sent'] - rtp0['packets_sent']}, lost "
            f"{rtp1['lost'] - rtp0['lost']}, late {rtp1['late'] - rtp0['late']}, concealed "
            f"{rtp1['concealed_frames'] - rtp0['concealed_frames']}\n"
            f"RSS before {rss0} KiB, right after {rss1} KiB, after recording {rss2} KiB "
            f"(growth {(max(rss1, rss2) - rss0) / 1024:.1f} MiB)\n"
            f"sip stats before {sip0}\nsip stats after {sip1}"
        )
        assert report.sent >= FLOOD_DATAGRAMS or report.seconds >= FLOOD_SECONDS
        # RTP kept flowing both ways while the flood ran, at the tone's pitch and level.
        assert during, "the flood ended before the handset could be recorded"
        for hz, db in during:
            assert abs(hz - BOB_HZ) <= 0.02 * BOB_HZ, during
            assert abs(db - db0) <= 3.0, (db0, during)
        for rates in rtp_during:
            assert rates["packets_received"] >= 40 and rates["packets_sent"] >= 40, rtp_during
        assert abs(bob_hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, bob_hz
        assert abs(bob_db - HANDSET_DBFS) <= 3.0, (bob_db, HANDSET_DBFS)
        assert bob_quiet <= 0.05, f"{100 * bob_quiet:.1f}% of baresip's frames were quiet"
        expected = flood_s / FRAME
        assert rtp1["packets_received"] - rtp0["packets_received"] >= 0.9 * expected
        assert rtp1["packets_sent"] - rtp0["packets_sent"] >= 0.9 * expected
        # After the flood, as before it.
        assert abs(hz1 - hz0) <= 0.02 * hz0, (hz0, hz1)
        assert abs(db1 - db0) <= 3.0, (db0, db1)
        assert abs(db0 - sent_db) <= 3.0, (db0, sent_db)
        assert max(rss1, rss2) - rss0 < 30 * 1024, (rss0, rss1, rss2)
        assert sip1.get("internal_errors", 0) == 0, sip1
        # Most of the flood reached the SIP code (UDP may still drop a few).
        assert sip1.get("received", 0) - sip0.get("received", 0) >= 0.9 * report.sent
        sizes = status.get("sip_tables")
        if isinstance(sizes, dict):
            assert sizes.get("server_transactions", 0) <= 1000, sizes
            assert sizes.get("calls", 0) <= 500, sizes
    finally:
        for s in socks:
            s.close()
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])
