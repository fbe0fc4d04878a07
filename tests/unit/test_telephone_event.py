"""RFC 4733 telephone-events: payload bytes, the sender's packet pattern, and the receiver."""

from __future__ import annotations

import pytest

from gateway.media.rtp import RtpPacket
from gateway.media.session import RtpSender
from gateway.media.telephone_event import (
    DigitReceived,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    TelephoneEventError,
    decode_event,
    digit_to_event,
    encode_event,
    event_to_digit,
)

DTMF_PT = 101


def test_payload_bytes_match_rfc_layout() -> None:
    # event 5, E=1, R=0, volume 10, duration 800 (100 ms at 8 kHz)
    assert encode_event(5, end=True, volume=10, duration=800) == bytes([5, 0x8A, 0x03, 0x20])
    assert bytes(TelephoneEvent(11, False, 63, 0xFFFF)) == bytes([11, 0x3F, 0xFF, 0xFF])
    assert decode_event(bytes([9, 0x8A, 0x03, 0x20])) == TelephoneEvent(9, True, 10, 800)
    # the reserved bit is ignored on receipt
    assert decode_event(bytes([1, 0x4A, 0, 160])) == TelephoneEvent(1, False, 10, 160)


def test_bad_payloads_and_fields() -> None:
    with pytest.raises(TelephoneEventError, match="4 bytes"):
        decode_event(b"\x01\x02")
    with pytest.raises(ValueError, match="volume"):
        encode_event(1, volume=64)
    with pytest.raises(ValueError, match="duration"):
        encode_event(1, duration=70000)
    with pytest.raises(ValueError, match="DTMF digit"):
        digit_to_event("X")


def test_digit_codes() -> None:
    assert [digit_to_event(d) for d in "09*#ABCD!"] == [0, 9, 10, 11, 12, 13, 14, 15, 16]
    assert digit_to_event("a") == 12
    assert event_to_digit(11) == "#" and event_to_digit(16) == "!" and event_to_digit(40) is None


def run_sender(tx: DtmfSender, slots: int, now: float = 0.0) -> list[tuple[int, list[RtpPacket], bool]]:
    """Drive the sender like the stream does; audio slots advance the RTP clock by 160."""
    out = []
    for k in range(slots):
        packets, audio = tx.on_slot(now + k * 0.020)
        tx.rtp.skip(160)  # audio sent or suppressed, the media clock moves on either way
        out.append((k, [RtpPacket.parse(p) for p in packets], audio))
    return out


def test_sender_pattern_for_a_100ms_digit() -> None:
    rtp = RtpSender(0x5151, 0, seq=100, timestamp=8000)
    tx = DtmfSender(rtp, DTMF_PT)
    tx.start("5", 0.0, duration_ms=100, volume=10)
    slots = run_sender(tx, 10)
    packets = [p for _, ps, _ in slots for p in ps]
    events = [decode_event(p.payload) for p in packets]
    assert {p.payload_type for p in packets} == {DTMF_PT}
    assert {p.timestamp for p in packets} == {8000}  # fixed at the event start
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert [p.sequence for p in packets] == list(range(100, 100 + len(packets)))
    assert all(e.event == 5 and e.volume == 10 for e in events)
    starts = [e for e in events if not e.end]
    ends = [e for e in events if e.end]
    assert [e.duration for e in starts] == [160, 320, 480]
    assert len(ends) == 3 and {e.duration for e in ends} == {800}
    # audio is suppressed for exactly the five slots the event covers
    assert [audio for _, _, audio in slots] == [False] * 5 + [True] * 5


def test_long_digit_sends_updates_with_growing_duration() -> None:
    rtp = RtpSender(1, 0, seq=0, timestamp=0)
    tx = DtmfSender(rtp, DTMF_PT)
    tx.start("#", 0.0, duration_ms=300)
    packets = [p for _, ps, _ in run_sender(tx, 20) for p in ps]
    events = [decode_event(p.payload) for p in packets]
    durations = [e.duration for e in events if not e.end]
    assert durations == sorted(durations) and len(set(durations)) == len(durations)
    gaps = [b - a for a, b in zip(durations[2:], durations[3:], strict=False)]
    assert all(400 <= g <= 480 for g in gaps)  # every 50-60 ms of media
    ends = [p for p, e in zip(packets, events, strict=True) if e.end]
    assert len(ends) == 3
    assert {decode_event(p.payload).duration for p in ends} == {2400}
    assert len({p.timestamp for p in packets}) == 1


def test_queued_digits_are_spaced_and_get_their_own_timestamps() -> None:
    rtp = RtpSender(1, 0, seq=0, timestamp=0)
    tx = DtmfSender(rtp, DTMF_PT)
    for d in "12":
        tx.start(d, 0.0, duration_ms=60)
    slots = run_sender(tx, 16)
    firsts = [(k, p) for k, ps, _ in slots for p in ps if p.marker]
    assert len(firsts) == 2
    (k1, p1), (k2, p2) = firsts
    assert decode_event(p1.payload).event == 1 and decode_event(p2.payload).event == 2
    assert k2 - k1 >= 3 + 3  # 60 ms event, then at least 50 ms of audio between digits
    assert p2.timestamp - p1.timestamp == (k2 - k1) * 160
    assert not tx.busy


def test_digit_waits_for_its_start_time() -> None:
    tx = DtmfSender(RtpSender(1, 0, seq=0, timestamp=0), DTMF_PT)
    tx.start("7", 0.100)
    slots = run_sender(tx, 8)
    first = next(k for k, ps, _ in slots if ps)
    assert first == 5  # slot times 0, 20, ... 100 ms


def packets_for(digit: str, ts: int, *, seq: int = 0, ms: int = 100) -> list[RtpPacket]:
    tx = DtmfSender(RtpSender(9, 0, seq=seq, timestamp=ts), DTMF_PT)
    tx.start(digit, 0.0, duration_ms=ms)
    return [p for _, ps, _ in run_sender(tx, ms // 20 + 4) for p in ps]


def test_receiver_reports_each_event_once() -> None:
    rx = DtmfReceiver()
    got: list[DigitReceived] = []
    for i, p in enumerate(packets_for("8", 1000)):
        got += rx.feed(p, i * 0.02)
    assert got == [DigitReceived("8", 100)]
    # a late repeat of the end packet does not report the digit again
    assert rx.feed(packets_for("8", 1000)[-1], 1.0) == []


def test_same_digit_twice_is_two_events() -> None:
    rx = DtmfReceiver()
    got: list[DigitReceived] = []
    for p in packets_for("3", 1000) + packets_for("3", 5000, seq=20):
        got += rx.feed(p, 0.0)
    assert got == [DigitReceived("3", 100), DigitReceived("3", 100)]


def test_lost_end_packets_are_reported_by_timeout() -> None:
    rx = DtmfReceiver(timeout=0.3)
    packets = [p for p in packets_for("9", 1000) if not decode_event(p.payload).end]
    for i, p in enumerate(packets):
        assert rx.feed(p, i * 0.02) == []
    assert rx.poll(0.2) == []
    assert rx.next_deadline() == pytest.approx(0.04 + 0.3)
    assert rx.poll(0.5) == [DigitReceived("9", 60)]  # the longest duration seen
    assert rx.ends_lost == 1 and rx.next_deadline() is None


def test_new_event_closes_one_whose_end_was_lost() -> None:
    rx = DtmfReceiver()
    first = [p for p in packets_for("1", 1000) if not decode_event(p.payload).end]
    second = packets_for("2", 3000, seq=10)
    got: list[DigitReceived] = []
    for p in first + second:
        got += rx.feed(p, 0.0)
    assert [d.digit for d in got] == ["1", "2"]


def test_end_only_event_still_reports() -> None:
    rx = DtmfReceiver()
    end = [p for p in packets_for("*", 1000) if decode_event(p.payload).end][0]
    assert rx.feed(end, 0.0) == [DigitReceived("*", 100)]


def test_malformed_and_unknown_events_are_counted() -> None:
    rx = DtmfReceiver()
    assert rx.feed(RtpPacket(DTMF_PT, 1, 1, 1, b"\x01"), 0.0) == []
    assert rx.feed(RtpPacket(DTMF_PT, 2, 2, 1, encode_event(40, end=True, duration=8)), 0.0) == []
    assert rx.malformed == 1 and rx.ignored == 1
