"""RTCP: packets round-trip, reports carry the loss and jitter measured, RTT from LSR/DLSR."""

from __future__ import annotations

import random
import secrets
from pathlib import Path

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.media.quality import ReceiveStats
from gateway.media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpSession,
    SdesChunk,
    SenderInfo,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    compound,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
)
from gateway.media.rtp import RtpPacket, is_rtcp
from gateway.media.secure import SrtpPair
from gateway.media.stream import MediaStream

BLOCK = ReportBlock(0xCAFEBABE, fraction_lost=25, cumulative_lost=-3, highest_seq=0x0001FFFF,
                    jitter=37, lsr=0x12345678, dlsr=65536)

# A compound RR + SDES as a libre-based phone (baresip) sends it: RR with one block about
# SSRC 0x11223344, then an SDES chunk with a 23-byte CNAME. Laid out by hand from RFC 3550.
PEER_RR_SDES = bytes.fromhex(
    "81c90007" "deadbeef"
    "11223344" "0a000004" "00010064" "00000010" "9abcdef0" "00008000"
    "81ca0008" "deadbeef" "0117" + b"baresip@127.0.0.1:20000".hex() + "000000"
)


def test_report_block_round_trip_keeps_a_negative_cumulative_loss() -> None:
    data = bytes(BLOCK)
    assert len(data) == 24 and data[4:8] == bytes.fromhex("19fffffd")
    assert ReportBlock.parse(data) == BLOCK


@pytest.mark.parametrize("packet", [
    SenderReport(0x01020304, ntp_timestamp(1_700_000_000.25), 160, 50, 8000, (BLOCK,)),
    SenderReport(0x01020304, 0, 0, 0, 0),
    ReceiverReport(0x0A0B0C0D, (BLOCK, ReportBlock(7, 0, 0, 1, 0))),
    ReceiverReport(0x0A0B0C0D),
    SourceDescription.cname(0x55, "line1@gw.example"),
    SourceDescription((SdesChunk(1, ((1, b"abc"), (2, b"x" * 10))), SdesChunk(2, ()))),
    Bye((0x55,), "hangup"),
    Bye((1, 2)),
])
def test_packets_round_trip_alone_and_in_a_compound(packet: object) -> None:
    data = bytes(packet)  # type: ignore[call-overload]
    assert len(data) % 4 == 0 and is_rtcp(data)
    assert type(packet).parse(data) == packet  # type: ignore[attr-defined]
    sdes = SourceDescription.cname(9, "z")
    assert parse_compound(data + bytes(sdes)) == [packet, sdes]


def test_peer_compound_report_parses_to_its_fields() -> None:
    rr, sdes = parse_compound(PEER_RR_SDES)
    assert rr == ReceiverReport(0xDEADBEEF, (ReportBlock(
        0x11223344, fraction_lost=10, cumulative_lost=4, highest_seq=0x10064, jitter=16,
        lsr=0x9ABCDEF0, dlsr=0x8000),))
    assert sdes == SourceDescription.cname(0xDEADBEEF, "baresip@127.0.0.1:20000")
    assert compound([rr, sdes]) == PEER_RR_SDES


def test_unknown_types_are_kept_and_padding_is_honoured() -> None:
    app = bytes.fromhex("80cc0002" "00000001" "6e616d65")  # APP, PT 204
    padded_rr = bytes.fromhex("a0c90002" "00000009" "00000004")  # P bit, 4 octets of padding
    assert parse_compound(app + padded_rr) == [UnknownRtcp(204, 0, bytes.fromhex("000000016e616d65")),
                       ReceiverReport(9)]


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (bytes.fromhex("81c9"), "stray"),
    (bytes.fromhex("41c90001" "00000001"), "version"),
    (bytes.fromhex("81c90007" "00000001") + bytes(20), "claims 32 bytes"),
    (bytes.fromhex("82c90001" "00000001"), "2 report blocks"),
    (bytes.fromhex("80c80001" "00000001"), "SR too short"),
    (bytes.fromhex("81ca0002" "00000001" "0109ab00"), "runs past"),
    (bytes.fromhex("a0c90001" "00000000"), "padding"),
])
def test_malformed_rtcp_is_refused_with_a_reason(data: bytes, match: str) -> None:
    with pytest.raises(RtcpError, match=match):
        parse_compound(data)


def test_ntp_middle_is_16_16_seconds() -> None:
    ntp = ntp_timestamp(0.5)  # 1970-01-01T00:00:00.5
    assert ntp >> 32 == 2_208_988_800 and ntp & 0xFFFFFFFF == 1 << 31
    assert ntp_middle(ntp) == ((2_208_988_800 & 0xFFFF) << 16) | 0x8000


# ---------------------------------------------------------------- the session


def rtp(seq: int, ts: int, ssrc: int = 0xBEEF) -> RtpPacket:
    return RtpPacket(payload_type=0, sequence=seq % 65536, timestamp=ts % 2**32, ssrc=ssrc,
                     payload=bytes(160))


def test_report_carries_the_loss_and_jitter_measured() -> None:
    rx = ReceiveStats(8000)
    t = 100.0
    # 200 packets sent 20 ms apart; one in 10 lost; arrivals alternate 0 / 4 ms late
    for i in range(200):
        if i % 10 == 5:
            continue
        rx.update(rtp(65500 + i, 1000 + 160 * i), t + 0.020 * i + (0.004 if i % 2 else 0.0))
    session = RtcpSession(0x1111, "gw@test", start=t, rng=random.Random(1))
    report, sdes = session.report(t + 5, SenderInfo(1234, 10, 1600), rx)
    assert isinstance(report, SenderReport) and sdes == SourceDescription.cname(0x1111, "gw@test")
    (block,) = report.reports
    assert block.ssrc == 0xBEEF
    assert block.cumulative_lost == 20 and rx.expected == 200
    assert block.fraction_lost == int(20 / 200 * 256)
    assert block.highest_seq == 65500 + 199  # extended: one wrap cycle in the upper bits
    # RFC 3550 A.8 worked independently: |D| is 32 ticks (4 ms) between neighbours whose
    # lateness differs, 0 across a loss that pairs two equally late packets
    j, prev = 0.0, None
    for i in (i for i in range(200) if i % 10 != 5):
        late = 32 if i % 2 else 0
        if prev is not None:
            j += (abs(late - prev) - j) / 16
        prev = late
    assert block.jitter == int(j) and 25 <= block.jitter <= 32
    assert block.lsr == 0 and block.dlsr == 0  # no SR from the peer yet
    # the next report's fraction covers only what happened since (nothing): 0
    report2, _ = session.report(t + 10, SenderInfo(1234, 10, 1600), rx)
    assert report2.reports[0].fraction_lost == 0 and report2.reports[0].cumulative_lost == 20


def test_sender_report_only_while_sending() -> None:
    session = RtcpSession(5, "c", start=0.0, rng=random.Random(2))
    assert isinstance(session.report(5, SenderInfo(0, 3, 480), None)[0], SenderReport)
    assert isinstance(session.report(10, SenderInfo(0, 3, 480), None)[0], SenderReport)
    assert isinstance(session.report(15, SenderInfo(0, 3, 480), None)[0], ReceiverReport)
    assert isinstance(session.report(20, None, None)[0], ReceiverReport)
    assert session.sent == 4


def test_round_trip_time_from_lsr_and_dlsr_ignores_the_peers_clock() -> None:
    # A's wall clock is right; B's is 1000 s off and its monotonic clock starts elsewhere.
    a = RtcpSession(0xA, "a", start=0.0, wallclock_offset=1_700_000_000.0)
    b = RtcpSession(0xB, "b", start=0.0, wallclock_offset=1_700_001_000.0)
    rx_b = ReceiveStats(8000)
    rx_b.update(rtp(1, 0, ssrc=0xA), 50.0)
    sr = compound(a.report(10.0, SenderInfo(0, 100, 16000), None))
    b.receive(sr, 50.050)  # 50 ms one way (B's now-clock reads 50.05 then)
    rr = compound(b.report(50.500, None, rx_b))  # B holds it 450 ms
    block = ReceiverReport.parse(rr[:32]).reports[0]
    assert block.lsr == ntp_middle(ntp_timestamp(1_700_000_010.0))
    assert block.dlsr == int(0.450 * 65536)
    a.receive(rr, 10.550)  # 50 ms back
    assert a.remote.rtt_ms == pytest.approx(100.0, abs=0.05)
    assert a.remote.reports == 1 and a.received == 1
    assert a.stats(None)["rtt_ms"] == pytest.approx(100.0, abs=0.05)


def test_report_block_about_another_source_is_not_ours() -> None:
    a = RtcpSession(0xA, "a", start=0.0)
    a.receive(bytes(ReceiverReport(0xB, (ReportBlock(0xC, 200, 50, 1, 800),))), 1.0)
    assert a.remote.reports == 0 and a.remote.fraction_lost == 0.0


def test_reports_come_every_5_s_randomised_and_never_before_2_5_s() -> None:
    session = RtcpSession(1, "c", start=1000.0, rng=random.Random(7))
    times = []
    now = 1000.0
    while now < 1000.0 + 5000:
        if session.due(now):
            session.report(now, None, None)
            times.append(now)
        now = round(now + 0.020, 3)
    gaps = [b - a for a, b in zip([1000.0, *times], times, strict=False)]
    assert min(gaps) >= 2.5 - 0.021 and max(gaps) <= 7.5 + 0.021
    assert 4.8 <= sum(gaps) / len(gaps) <= 5.2
    mean = sum(gaps) / len(gaps)
    spread = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert 1.2 < spread < 1.7  # uniform over 2.5..7.5 s: 1.44; a fixed beat would be 0


# ---------------------------------------------------------------- two streams, one wire


def make_stream(ssrc: int, remote_port: int, now: float, srtp: SrtpPair | None = None,
                offset: float = 1_700_000_000.0) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                       remote_addr=("127.0.0.1", remote_port), ssrc=ssrc, seq=ssrc & 0xFFFF,
                       timestamp=ssrc, now=now, srtp=srtp, cname=f"{ssrc}@test",
                       wallclock_offset=offset)


@pytest.mark.parametrize("secure", [False, True])
def test_two_streams_report_loss_jitter_and_rtt_to_each_other(secure: bool) -> None:
    ka, kb = secrets.token_bytes(30), secrets.token_bytes(30)
    pa = SrtpPair("AES_CM_128_HMAC_SHA1_80", ka, kb) if secure else None
    pb = SrtpPair("AES_CM_128_HMAC_SHA1_80", kb, ka) if secure else None
    a = make_stream(0xAAAA0001, 40002, 0.0, pa)
    b = make_stream(0xBBBB0002, 40000, 0.0, pb, offset=1_700_000_123.0)
    rng = random.Random(3)
    wire: list[tuple[float, str, bytes]] = []
    delay = 0.030
    rtcp_seen = {"a": 0, "b": 0}
    b_reported_jitter: list[int] = []  # ticks, as each of B's reports carried it
    for k in range(1500):  # 30 s
        now = k * 0.020
        a.push_frame(SILENCE_FRAME)
        b.push_frame(SILENCE_FRAME)
        for n, data in enumerate(a.send_due(now)):
            if (a.packets_sent - n) % 20 != 0:  # A -> B loses 1 packet in 20
                wire.append((now + delay + rng.uniform(0, 0.010), "b", data))
        wire.extend((now + delay, "a", d) for d in b.send_due(now))
        for side, stream in (("a", a), ("b", b)):
            report = stream.rtcp_due(now)
            if report is not None:
                assert is_rtcp(report)
                rtcp_seen[side] += 1
                if side == "b":
                    b_reported_jitter.append(int(b._rx_stats.jitter))
                wire.append((now + delay, "b" if side == "a" else "a", report))
        wire.sort(key=lambda w: w[0])
        while wire and wire[0][0] <= now + 0.020:  # delivered at its own arrival time
            at, to, data = wire.pop(0)
            (a if to == "a" else b).receive(data, ("127.0.0.1", 40002 if to == "a" else 40000),
                                            at)
    sa, sb = a.rtcp_stats(), b.rtcp_stats()
    assert 4 <= sa["sent"] <= 12 and sa["sent"] == rtcp_seen["a"] == a.stats()["rtcp_sent"]
    assert sb["received"] == rtcp_seen["a"] and sa["received"] == rtcp_seen["b"]
    assert sa["malformed"] == 0 and sb["malformed"] == 0
    # B measured A's loss and jitter; A reads the same figures back from B's reports
    assert sb["local_lost"] == pytest.approx(75, abs=2)
    assert 0 < sa["remote_lost"] <= sb["local_lost"]
    assert sa["remote_fraction_lost"] == pytest.approx(1 / 20, abs=0.02)
    assert 1.0 < sb["local_jitter_ms"] < 5.0
    # the jitter of one of B's reports (the last to arrive), in 1/8 ms ticks
    assert round(sa["remote_jitter_ms"] * 8) in b_reported_jitter[-2:]
    assert 1.0 < sa["remote_jitter_ms"] < 5.0
    assert sb["remote_lost"] == 0 and sb["remote_jitter_ms"] < 0.5  # B -> A is clean
    # RTT: 30 ms each way plus up to a tick each side waiting for the next slot
    rtt = sa["rtt_ms"]
    assert rtt is not None and 59.0 <= rtt <= 102.0, rtt
    assert sb["rtt_ms"] is not None and 59.0 <= sb["rtt_ms"] <= 102.0
    if secure:
        assert a.stats()["srtcp_dropped_auth"] == 0 and b.stats()["srtcp_dropped_auth"] == 0


def test_secure_stream_reads_no_plain_rtcp() -> None:
    ka, kb = secrets.token_bytes(30), secrets.token_bytes(30)
    b = make_stream(0xB, 40000, 0.0, SrtpPair("AES_CM_128_HMAC_SHA1_80", kb, ka))
    forged = bytes(ReceiverReport(0x66, (ReportBlock(0xB, 255, 5000, 1, 99),)))
    b.receive(forged, ("127.0.0.1", 40003), 1.0)
    assert b.rtcp_stats()["received"] == 0 and b.rtcp_stats()["remote_reports"] == 0


def test_final_report_ends_in_bye() -> None:
    a = make_stream(0xA, 40002, 0.0)
    data = a.rtcp_bye(3.0, "hangup")
    assert data is not None
    packets = parse_compound(data)
    assert isinstance(packets[0], ReceiverReport) and packets[-1] == Bye((0xA,), "hangup")


# ---------------------------------------------------------------- captured from baresip

DATA = Path(__file__).parent.parent / "data" / "rtcp"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.bin")))
def test_captured_rtcp_round_trips_byte_for_byte(name: str) -> None:
    data = (DATA / name).read_bytes()
    assert compound(parse_compound(data)) == data


def test_captured_baresip_report_fields() -> None:
    sr, sdes = parse_compound((DATA / "baresip-sr-lsr-sdes.bin").read_bytes())
    assert isinstance(sr, SenderReport) and sr.packet_count == 500 and sr.octet_count == 80000
    (block,) = sr.reports
    assert block.dlsr > 0 and block.cumulative_lost == 0
    ours, _ = parse_compound((DATA / "gateway-sr-sdes.bin").read_bytes())
    assert isinstance(ours, SenderReport) and block.ssrc == ours.ssrc
    assert block.lsr == ntp_middle(ours.ntp_timestamp)  # baresip echoed our SR's time
    assert sdes == SourceDescription.cname(sr.ssrc, "sip:300@127.0.0.1")
    bye, _ = parse_compound((DATA / "baresip-bye-sdes.bin").read_bytes())
    assert bye == Bye((sr.ssrc,), "Adjo")
    (app,) = parse_compound((DATA / "baresip-app-ping.bin").read_bytes())
    assert isinstance(app, UnknownRtcp) and app.packet_type == 204 and b"PING" in app.body
