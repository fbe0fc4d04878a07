"""RTP packet parsing, serial-number arithmetic, the sender's numbering and the pacing schedule."""

from __future__ import annotations

import random
import struct

import pytest

from gateway.media.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    is_rtcp,
    seq_distance,
    seq_newer,
    ts_distance,
    ts_newer,
)
from gateway.media.session import PacingSchedule, RtpSender

# A PCMU packet as it appears on the wire: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF,
# SSRC 0x01020304, four payload octets.
WIRE = bytes.fromhex("8080 1234 deadbeef 01020304 fffefdfc".replace(" ", ""))


def test_parse_known_bytes() -> None:
    p = RtpPacket.parse(WIRE)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc) == (0, 0x1234, 0xDEADBEEF, 0x01020304)
    assert p.marker is True
    assert p.payload == b"\xff\xfe\xfd\xfc"
    assert p.csrc == () and p.extension is None and p.padding == 0
    assert bytes(p) == WIRE


def test_round_trip_with_csrc_extension_and_padding() -> None:
    p = RtpPacket(
        payload_type=101,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=0xCAFEBABE,
        payload=b"\x05\x0a\x00\xa0",
        csrc=(1, 2, 3),
        extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00"),
        padding=3,
    )
    wire = bytes(p)
    assert wire[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(wire) == 12 + 12 + 4 + 4 + 4 + 3
    assert wire[-1] == 3
    assert RtpPacket.parse(wire) == p


def test_padding_is_stripped_from_payload() -> None:
    wire = bytearray(WIRE)
    wire[0] |= 0x20
    wire += b"\x00\x00\x03"
    assert RtpPacket.parse(bytes(wire)).payload == b"\xff\xfe\xfd\xfc"


@pytest.mark.parametrize(
    "data,message",
    [
        (WIRE[:11], "too short"),
        (bytes([0x40]) + WIRE[1:], "version must be 2"),
        (bytes([0x82]) + WIRE[1:], "2 CSRCs"),
        (bytes([0x90]) + WIRE[1:12], "no extension header"),
        (bytes([0x90]) + WIRE[1:12] + b"\xbe\xde\x00\x05", "5 words"),
        (bytes([0xA0]) + WIRE[1:-1] + b"\x00", "padding count 0"),
        (bytes([0xA0]) + WIRE[1:-1] + b"\x09", "padding count 9"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)
    assert issubclass(RtpError, ValueError)


def test_serialising_out_of_range_fields_names_them() -> None:
    with pytest.raises(ValueError, match="sequence"):
        bytes(RtpPacket(0, 65536, 0, 0))
    with pytest.raises(ValueError, match="payload type"):
        bytes(RtpPacket(128, 0, 0, 0))
    with pytest.raises(ValueError, match="whole 32-bit words"):
        RtpExtension(1, b"abc")


def test_rtcp_is_recognised_on_a_muxed_port() -> None:
    sender_report = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    assert is_rtcp(sender_report)
    assert not is_rtcp(WIRE)


def test_sequence_arithmetic_across_the_wrap() -> None:
    assert seq_distance(0, 65535) == 1
    assert seq_distance(65535, 0) == -1
    assert seq_distance(5, 65530) == 11
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert not seq_newer(7, 7)
    assert seq_distance(100, 40100) == 25536  # more than half the space back is ahead
    # half the space ahead counts as behind: the ambiguity is resolved one way consistently
    assert seq_distance(32768, 0) == -32768
    assert seq_distance(32767, 0) == 32767


def test_timestamp_arithmetic_across_the_wrap() -> None:
    assert ts_distance(80, 2**32 - 80) == 160
    assert ts_distance(2**32 - 80, 80) == -160
    assert ts_newer(0, 2**32 - 1)
    assert not ts_newer(2**32 - 1, 0)


def test_sender_counts_samples_and_wraps_sequence_and_timestamp() -> None:
    s = RtpSender(0x11223344, 0, seq=65534, timestamp=2**32 - 320)
    packets = [RtpPacket.parse(s.packetize(bytes(160), 160, marker=(i == 0))) for i in range(4)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 320, 2**32 - 160, 0, 160]
    assert [p.marker for p in packets] == [True, False, False, False]
    assert {p.ssrc for p in packets} == {0x11223344}
    assert s.packets_sent == 4 and s.octets_sent == 640


def test_sender_events_share_numbering_but_keep_their_timestamp() -> None:
    s = RtpSender(1, 0, seq=10, timestamp=1000)
    a = RtpPacket.parse(s.event(b"\x01\x0a\x00\xa0", payload_type=101, timestamp=1000))
    s.skip(160)
    b = RtpPacket.parse(s.packetize(bytes(160), 160))
    assert (a.sequence, a.timestamp, a.payload_type) == (10, 1000, 101)
    assert (b.sequence, b.timestamp, b.payload_type) == (11, 1160, 0)


def test_pacing_slots_are_anchored() -> None:
    sched = PacingSchedule(start=100.0)
    assert sched.due(99.99) == 0
    assert sched.due(100.0) == 1
    assert sched.next_deadline() == pytest.approx(100.020)
    assert sched.due(100.019) == 0
    assert sched.due(100.041) == 2
    assert sched.next_deadline() == pytest.approx(100.060)


def test_pacing_never_drifts_over_3000_slots_with_jittery_wakeups() -> None:
    rng = random.Random(7)
    start = 5000.123
    sched = PacingSchedule(start=start)
    total = 0
    now = start
    for _ in range(3000):
        deadline = sched.next_deadline()
        # wake up late by 0..15 ms, as a busy event loop does
        now = max(now, deadline + rng.uniform(0.0, 0.015))
        total += sched.due(now)
    # the 3000th deadline is exactly where the anchor says, not 3000 rounding errors away
    assert sched.slot_time(3000) == pytest.approx(start + 60.0, abs=1e-9)
    expected = int((now - start) / 0.020) + 1
    assert total == expected
    assert sched.skipped == 0
    assert sched.next_deadline() == pytest.approx(start + expected * 0.020, abs=1e-9)


def test_pacing_skips_ahead_after_a_long_stall() -> None:
    sched = PacingSchedule(start=0.0, max_burst=5)
    assert sched.due(0.0) == 1
    assert sched.due(0.100) == 5  # five slots waiting: a burst is fine
    assert sched.last_skipped == 0
    assert sched.due(1.000) == 1  # 45 waiting: send one, skip the rest
    assert sched.last_skipped == 44
    assert sched.skipped == 44
    assert sched.next_deadline() == pytest.approx(1.020)
    assert sched.sent + sched.skipped == 51
