"""Pacing statistics and frame parsing of the RTP pacing bench, on synthetic packets."""

from __future__ import annotations

import json
import math
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

# `bench` is a top-level package of the source tree, not part of the installed project;
# plain `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.capture import (  # noqa: E402
    PACKET_HOST,
    PACKET_OUTGOING,
    Arrival,
    LoopbackCapture,
    PacingStats,
    UdpDatagram,
    group_rtp_streams,
    pacing_stats,
    parse_udp_frame,
    sdp_audio_ports,
)
from bench.rtp_pacing import PacingReport, summarise_runs, summary_table  # noqa: E402
from gateway.media.rtp import RtpPacket  # noqa: E402

RATE = 8000
STEP = 160  # 20 ms of 8 kHz samples
T0 = 5.0  # seconds since the capture started, as LoopbackCapture reports times


def stream(
    n: int,
    *,
    seq0: int = 1000,
    ts0: int = 12345,
    scale: float = 1.0,
    jitter: dict[int, float] | None = None,
) -> list[Arrival]:
    """n packets 20 ms apart in RTP time, arriving at ts/8000 * scale (+ jitter[i] s)."""
    out: list[Arrival] = []
    for i in range(n):
        t = T0 + i * STEP / RATE * scale + (jitter or {}).get(i, 0.0)
        out.append((t, (seq0 + i) % 65536, (ts0 + i * STEP) % 2**32))
    return out


def test_perfect_stream_has_no_deviation_and_no_drift() -> None:
    stats = pacing_stats(stream(3000))
    assert stats.packets == 3000
    assert stats.intervals == 2999
    assert stats.gaps == 0
    assert stats.p50_ms == pytest.approx(0.0, abs=1e-4)
    assert stats.p99_ms == pytest.approx(0.0, abs=1e-4)
    assert stats.max_ms == pytest.approx(0.0, abs=1e-4)
    assert stats.drift_ppm == pytest.approx(0.0, abs=0.05)
    assert stats.duration_s == pytest.approx(2999 * 0.02, abs=1e-6)


@pytest.mark.parametrize("ppm", [100.0, -100.0, 37.5])
def test_drift_is_reported_in_ppm(ppm: float) -> None:
    # 60 s of packets whose arrival times stretch by `ppm` against their timestamps.
    stats = pacing_stats(stream(3000, scale=1 + ppm * 1e-6))
    assert stats.drift_ppm == pytest.approx(ppm, abs=1.0)
    # 100 ppm of 20 ms is 2 us per interval: drift barely shows in the deviation.
    assert stats.p99_ms < 0.01


def test_injected_jitter_shows_in_p99_and_max_not_p50() -> None:
    rng = np.random.default_rng(7)
    late = {int(i): 0.004 for i in rng.choice(np.arange(10, 2990), size=60, replace=False)}
    stats = pacing_stats(stream(3000, jitter=late))
    # A packet 4 ms late makes two intervals 4 ms off (one long, one short).
    assert stats.max_ms == pytest.approx(4.0, abs=1e-3)
    assert stats.p99_ms == pytest.approx(4.0, abs=1e-3)
    assert stats.p50_ms == pytest.approx(0.0, abs=1e-4)
    # Sporadic lateness is not a clock rate.
    assert abs(stats.drift_ppm) < 5.0


def test_skipped_slot_then_two_packets_counts_as_back_to_back() -> None:
    # Packets 100, 300 and 301 are held back 19.9 ms: each leaves just after its successor
    # would have, i.e. a tick sent nothing and the next one sent two.
    stats = pacing_stats(stream(1000, jitter={100: 0.0199, 300: 0.0199, 301: 0.0199}))
    assert stats.back_to_back == 2
    assert stats.max_ms == pytest.approx(19.9, abs=1e-3)
    assert pacing_stats(stream(1000)).back_to_back == 0


def test_single_late_packet_is_the_max_but_not_the_p99() -> None:
    stats = pacing_stats(stream(3000, jitter={1500: 0.0075}))
    assert stats.max_ms == pytest.approx(7.5, abs=1e-3)
    assert stats.p99_ms == pytest.approx(0.0, abs=1e-3)


def test_sequence_wrap_keeps_intervals_consecutive() -> None:
    arrivals = stream(200, seq0=65500)
    assert any(a[1] == 65535 for a in arrivals) and any(a[1] == 0 for a in arrivals)
    stats = pacing_stats(arrivals)
    assert stats.intervals == 199
    assert stats.gaps == 0
    assert stats.max_ms == pytest.approx(0.0, abs=1e-4)


def test_timestamp_wrap_keeps_deviation_and_drift_small() -> None:
    arrivals = stream(500, ts0=2**32 - 100 * STEP, scale=1 + 50e-6)
    assert arrivals[-1][2] < arrivals[0][2]  # the timestamp really wrapped
    stats = pacing_stats(arrivals)
    assert stats.max_ms < 0.01
    assert stats.drift_ppm == pytest.approx(50.0, abs=1.0)


def test_lost_and_reordered_packets_are_skipped_not_counted_as_jitter() -> None:
    arrivals = stream(100)
    del arrivals[40]  # lost: the 39->41 pair is a 40 ms gap in both clocks, skip it anyway
    arrivals[60], arrivals[61] = arrivals[61], arrivals[60]  # reordered in capture order
    stats = pacing_stats(arrivals)
    assert stats.gaps == 4  # 39->41, 60->62, 62->61, 61->63
    assert stats.intervals == 98 - 4
    assert stats.max_ms == pytest.approx(0.0, abs=1e-4)


def test_needs_two_packets() -> None:
    with pytest.raises(ValueError, match="at least 2 packets"):
        pacing_stats(stream(1))


def test_only_gaps_gives_nan_percentiles_but_a_drift() -> None:
    arrivals = [(T0 + i * 0.04, (i * 2) % 65536, i * 320) for i in range(10)]
    stats = pacing_stats(arrivals)
    assert stats.intervals == 0 and stats.gaps == 9
    assert math.isnan(stats.p99_ms)
    assert stats.drift_ppm == pytest.approx(0.0, abs=0.1)


# ----------------------------------------------------------------------- frame parsing


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, frag: int = 0) -> bytes:
    eth = bytes(12) + struct.pack("!H", 0x0800)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, frag, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    return eth + ip + udp


def test_parse_udp_frame_reads_addresses_ports_payload_and_keeps_time() -> None:
    frame = udp_frame("127.0.0.1", 30000, "127.0.0.2", 20002, b"abc")
    d = parse_udp_frame(frame + b"\x00" * 4, 12.5)  # trailing padding is ignored
    assert d == UdpDatagram(12.5, "127.0.0.1", 30000, "127.0.0.2", 20002, b"abc")


def test_parse_udp_frame_refuses_non_udp_fragments_and_truncation() -> None:
    frame = udp_frame("127.0.0.1", 1, "127.0.0.1", 2, b"payload")
    tcp = bytearray(frame)
    tcp[14 + 9] = 6
    assert parse_udp_frame(bytes(tcp), 0.0) is None
    ipv6 = bytearray(frame)
    ipv6[12:14] = b"\x86\xdd"
    assert parse_udp_frame(bytes(ipv6), 0.0) is None
    assert parse_udp_frame(udp_frame("127.0.0.1", 1, "127.0.0.1", 2, b"x", frag=0x2000), 0.0) is None
    assert parse_udp_frame(frame[:-3], 0.0) is None


def test_group_rtp_streams_by_source_and_ssrc_skipping_rtcp_and_sip() -> None:
    def rtp(seq: int, ssrc: int, pt: int = 0) -> bytes:
        return bytes(RtpPacket(pt, seq, seq * 160, ssrc, b"\xff" * 160))

    rtcp_sr = bytes([0x80, 200, 0, 6]) + bytes(24)
    datagrams = [
        UdpDatagram(1.00, "127.0.0.1", 30000, "127.0.0.1", 20000, rtp(1, 0xA)),
        UdpDatagram(1.01, "127.0.0.1", 20000, "127.0.0.1", 30000, rtp(7, 0xB)),
        UdpDatagram(1.02, "127.0.0.1", 30000, "127.0.0.1", 20000, rtp(2, 0xA)),
        UdpDatagram(1.03, "127.0.0.1", 30000, "127.0.0.1", 20000, rtp(3, 0xA, pt=101)),
        UdpDatagram(1.04, "127.0.0.1", 30001, "127.0.0.1", 20001, rtcp_sr),
        UdpDatagram(1.05, "127.0.0.1", 5060, "127.0.0.1", 5062, b"SIP/2.0 200 OK\r\n\r\n"),
    ]
    streams = group_rtp_streams(datagrams)
    assert set(streams) == {("127.0.0.1", 30000, 0xA), ("127.0.0.1", 20000, 0xB)}
    a = streams[("127.0.0.1", 30000, 0xA)]
    assert a.dport == 20000
    assert a.main_payload_type == 0
    assert a.arrivals() == [(1.00, 1, 160), (1.02, 2, 320)]  # telephone-event left out
    assert a.arrivals(101) == [(1.03, 3, 480)]


def test_sdp_audio_ports_only_from_the_given_sip_port() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=audio 20042 RTP/AVP 0 101\r\n"
    datagrams = [
        UdpDatagram(0.0, "127.0.0.1", 5070, "127.0.0.1", 5080, b"INVITE ...\r\n\r\n" + body),
        UdpDatagram(0.1, "127.0.0.1", 5080, "127.0.0.1", 5070,
                    b"SIP/2.0 200 OK\r\n\r\n" + body.replace(b"20042", b"20100")),
    ]
    assert sdp_audio_ports(datagrams, 5070) == {20042}
    assert sdp_audio_ports(datagrams, 5080) == {20100}
    assert sdp_audio_ports(datagrams, 9999) == set()


# ----------------------------------------------------------------------- live loopback


def test_loopback_capture_keeps_each_datagram_once_with_kernel_times() -> None:
    """Real AF_PACKET capture on "lo" (needs root): each datagram once, in order, filtered."""
    try:
        probe = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        probe.close()
    except (PermissionError, AttributeError):
        pytest.skip("AF_PACKET capture needs root or CAP_NET_RAW on Linux")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        rx_port = rx.getsockname()[1]
        tx_port = tx.getsockname()[1]
        cap = LoopbackCapture([(rx_port, rx_port)])
        cap.start()
        try:
            for i in range(3):
                tx.sendto(b"rtp-%d" % i, ("127.0.0.1", rx_port))
            other.sendto(b"not-for-us", ("127.0.0.1", tx_port))  # neither port in range
        finally:
            cap.stop()
    got = cap.datagrams
    assert [d.payload for d in got] == [b"rtp-0", b"rtp-1", b"rtp-2"]
    assert {(d.sport, d.dport) for d in got} == {(tx_port, rx_port)}
    times = [d.time for d in got]
    assert times == sorted(times) and times[0] >= 0.0
    # Both copies of each datagram reach the packet socket on "lo"; one is kept.
    assert cap.seen_pkttypes[PACKET_OUTGOING] >= 3 and cap.seen_pkttypes[PACKET_HOST] >= 3
    assert cap.kernel_drops == 0 and cap.overflow == 0


# ----------------------------------------------------------------------- the report


def _stats(p99: float, drift: float, p50: float = 0.5) -> PacingStats:
    return PacingStats(3000, 60.0, 2999, 0, 0, p50, p99, p99 * 2, drift)


def test_report_targets_ratios_and_json() -> None:
    report = PacingReport("gateway", 60.0, "gateway->baresip", "baresip->gateway",
                          _stats(2.0, -49.0), _stats(4.0, 10.0))
    assert report.targets() == {"p99_not_worse_than_baresip": True, "drift_under_50ppm": True}
    assert report.ratios()["p99"] == pytest.approx(0.5)
    assert report.ratios()["drift"] == pytest.approx(4.9)
    worse = PacingReport("gateway", 60.0, "g", "b", _stats(4.1, 51.0), _stats(4.0, 0.0))
    assert worse.targets() == {"p99_not_worse_than_baresip": False, "drift_under_50ppm": False}
    assert worse.ratios()["drift"] is None  # reference drift exactly 0: no ratio
    assert "NOT met" in worse.table()
    doc = json.loads(report.as_json())
    assert doc["streams"]["gateway->baresip"]["p99_ms"] == 2.0
    assert doc["ratio"]["p99"] == 0.5


def test_report_without_intervals_prints_null_not_nan() -> None:
    empty = PacingStats(2, 0.04, 0, 1, 0, math.nan, math.nan, math.nan, 0.0)
    report = PacingReport("peer-only", 60.0, "a", "b", empty, _stats(1.0, 1.0))
    assert report.targets() is None
    doc = json.loads(report.as_json())
    assert doc["streams"]["a"]["p99_ms"] is None
    assert doc["ratio"]["p99"] is None


def test_summary_judges_targets_on_medians_not_one_bad_run() -> None:
    runs = [
        PacingReport("gateway", 60.0, "g", "b", _stats(3.0, 2.0), _stats(4.0, 1.0)),
        PacingReport("gateway", 60.0, "g", "b", _stats(8.0, 60.0), _stats(4.0, 1.0)),  # hiccup
        PacingReport("gateway", 60.0, "g", "b", _stats(3.6, -4.0), _stats(4.0, 1.0)),
    ]
    summary = summarise_runs(runs)
    assert summary["median_ratio"]["p99"] == pytest.approx(0.9)
    assert summary["median_first_abs_drift_ppm"] == pytest.approx(4.0)
    assert summary["targets"] == {"p99_not_worse_than_baresip": True, "drift_under_50ppm": True}
    assert len(summary["runs"]) == 3
    assert "met" in summary_table(summary)
    json.dumps(summary, allow_nan=False)  # no NaN sneaks into the JSON line
