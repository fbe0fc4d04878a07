"""bench/media.py's figures: which streams count, and the per-call columns."""

from pathlib import Path

from bench.capture import UdpDatagram
from bench.media import GATEWAY_RTP, Step, daemon_streams
from gateway.media.rtp import RtpPacket


def rtp(seq: int, ssrc: int) -> bytes:
    return bytes(RtpPacket(payload_type=0, sequence=seq, timestamp=160 * seq, ssrc=ssrc,
                           payload=bytes(160)))


def test_only_the_daemons_streams_to_sipp_count() -> None:
    ours, other, sipp = GATEWAY_RTP[0] + 2, GATEWAY_RTP[0] + 40, 41000
    grams = []
    for k in range(20):
        t = k * 0.020
        grams.append(UdpDatagram(t, "127.0.0.1", ours, "127.0.0.1", sipp, rtp(k, 1)))
        # an integration test's daemon in the same RTP range, sending to its own peer
        grams.append(UdpDatagram(t, "127.0.0.1", other, "127.0.0.1", 45000, rtp(k, 2)))
        # sipp's echo back to the daemon: not sent by the daemon
        grams.append(UdpDatagram(t, "127.0.0.1", sipp, "127.0.0.1", ours, rtp(k, 1)))
    streams = daemon_streams(grams, sipp)
    assert [(s.sport, s.ssrc) for s in streams] == [(ours, 1)]


def test_net_per_call_leaves_out_the_idle_lines() -> None:
    step = Step(calls=4, up=4, gw_cpu_pct=6.0, idle_pct=2.0, sipp_cpu_pct=1.0, lost=0, late=0,
                concealed=0, p99_ms=0.4, streams=4)
    assert step.gw_per_call == 1.5 and step.net_per_call == 1.0 and step.passed


def test_cpu_seconds_agrees_with_the_kernels_tick_count() -> None:
    import os
    from pathlib import Path

    from bench.media import TICK, cpu_seconds

    x = 0
    for i in range(2_000_000):  # some CPU time of our own to count
        x += i
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / TICK
    precise = cpu_seconds(os.getpid())
    assert precise > 0.0
    assert abs(precise - ticks) < 0.05 + 0.02 * ticks  # same quantity, finer grain


def test_the_bench_runs_the_daemon_with_the_units_real_time_scheduling(tmp_path: Path) -> None:
    from bench.media import UNIT, unit_scheduling

    assert unit_scheduling(UNIT) == ("rr", 10)  # what systemd/branchline.service sets
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\nExecStart=/bin/true\n")
    assert unit_scheduling(plain) is None
