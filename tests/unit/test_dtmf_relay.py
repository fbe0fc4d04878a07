"""DTMF conversion with the length of each press kept, in every direction.

- Handset tones -> RFC 4733: the event opens when the detector confirms the press, its
  duration field grows, and it ends with the press's measured length and three end
  packets (`DtmfRelay` + `DtmfSender` through a real `MediaStream`).
- Handset tones -> SIP INFO (``sip.dtmf: info``): one INFO with ``Duration=`` the length.
- RFC 4733 or SIP INFO -> handset: `LinePort.play_digit` plays a tone of the event's
  duration, which the detector measures back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, SAMPLE_RATE
from gateway.dsp.dtmf import DtmfDetector, generate
from gateway.media.rtp import RtpPacket
from gateway.media.session import RtpSender
from gateway.media.stream import MediaStream
from gateway.media.telephone_event import DtmfSender, decode_event, event_to_digit
from gateway.runtime.dtmf_relay import DtmfRelay
from gateway.runtime.ports import LinePort
from gateway.sip.info import dtmf_relay_body, parse_dtmf_info

DTMF_PT = 101


@dataclass
class _Handset:
    def is_off_hook(self) -> bool:
        return True

    def write_frame(self, frame: bytes) -> None:
        self.ear.append(frame)

    ear: list[bytes] = field(default_factory=list)


@dataclass
class _Call:
    call_id: str
    media: Any


@dataclass
class _Ua:
    infos: list[tuple[str, str, int]] = field(default_factory=list)

    def send_dtmf_info(self, call_id: str, digit: str, duration_ms: int, now: float) -> bool:
        self.infos.append((call_id, digit, duration_ms))
        return True


def _line_port(handset: _Handset | None = None) -> LinePort:
    return LinePort("fxs1", "201", None, cast(Any, handset or _Handset()), cast(Any, None),
                    cast(Any, None), call_id="c1")


def _stream() -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=DTMF_PT,
                       remote_addr=("127.0.0.1", 4000), ssrc=1, seq=1, timestamp=1000, now=0.0)


def _presses(spec: list[tuple[str, int]], gap_ms: int = 200) -> bytes:
    out = bytearray(bytes(2 * 800))
    for digit, ms in spec:
        out += generate(digit, ms, -12.0)
        out += bytes(2 * round(gap_ms * SAMPLE_RATE / 1000))
    return bytes(out)


def _run_handset(mode: str, pcm: bytes) -> tuple[list[RtpPacket], _Ua]:
    """The runtime's tick for one FXS line in a call: detect, send, release, pace out."""
    lp = _line_port()
    media = _stream()
    call = _Call("c1", media)
    relay = DtmfRelay()
    ua = _Ua()
    packets: list[RtpPacket] = []
    now = 0.0
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        now = i / 2 / SAMPLE_RATE
        lp.mic = pcm[i : i + FRAME_BYTES]
        for digit in lp.digits_heard():
            relay.pressed(mode, cast(Any, ua), call, lp, digit, now)  # the machine's SendDigit
        relay.released(mode, cast(Any, ua), {"c1": call}, lp, now)
        media.push_frame(lp.mic)
        packets += [RtpPacket.parse(p) for p in media.send_due(now + 0.0201)]
    return packets, ua


def _events(packets: list[RtpPacket]) -> dict[int, list[RtpPacket]]:
    by_ts: dict[int, list[RtpPacket]] = {}
    for p in packets:
        if p.payload_type == DTMF_PT:
            by_ts.setdefault(p.timestamp, []).append(p)
    return by_ts


PRESSES = [("1", 40), ("5", 65), ("#", 250), ("0", 1000), ("D", 3000)]


def test_handset_tones_become_rfc4733_events_of_the_press_length() -> None:
    packets, _ = _run_handset("rfc4733", _presses(PRESSES))
    events = _events(packets)
    assert len(events) == len(PRESSES)
    for (digit, ms), (_ts, pkts) in zip(PRESSES, sorted(events.items()), strict=True):
        evs = [decode_event(p.payload) for p in pkts]
        assert {event_to_digit(e.event) for e in evs} == {digit}
        assert pkts[0].marker and not any(p.marker for p in pkts[1:])
        durations = [e.duration for e in evs]
        assert durations == sorted(durations), "the duration field only grows"
        ends = [e for e in evs if e.end]
        assert len(ends) == 3 and evs[-3:] == ends, "three end packets, last"
        assert len({e.duration for e in ends}) == 1
        final_ms = ends[0].duration * 1000 / SAMPLE_RATE
        # the measured press (within 5 ms) rounded up to whole 20 ms slots
        assert ms <= final_ms <= ms + 25, (digit, ms, final_ms)
        if ms >= 250:
            assert len(evs) - 3 >= ms // 60, "updates while the key is held"


def test_the_audio_of_the_press_is_replaced_while_the_event_runs() -> None:
    packets, _ = _run_handset("rfc4733", _presses([("7", 500)]))
    events = _events(packets)
    ((ts, pkts),) = events.items()
    end_ts = ts + decode_event(pkts[-1].payload).duration
    audio_in_event = [p for p in packets if p.payload_type == 0 and ts <= p.timestamp < end_ts]
    assert audio_in_event == []


def test_handset_tones_become_sip_info_with_the_press_length() -> None:
    _, ua = _run_handset("info", _presses(PRESSES))
    assert [(d, c) for c, d, _ in ua.infos] == [(d, "c1") for d, _ in PRESSES]
    for (_, ms), (_, _, sent) in zip(PRESSES, ua.infos, strict=True):
        assert ms - 5 <= sent <= ms + 5, (ms, sent)


def test_info_mode_keeps_the_tones_out_of_the_audio() -> None:
    """Only the ~40 ms before the press is confirmed still goes out as tone."""
    packets, ua = _run_handset("info", _presses([("#", 250), ("2", 600)]))
    assert [d for _, d, _ in ua.infos] == ["#", "2"]
    loud = [p for p in packets if p.payload_type == 0 and p.payload != bytes([0xFF]) * 160]
    assert 0 < len(loud) <= 2 * 3, len(loud)


def test_inband_mode_sends_nothing_apart() -> None:
    packets, ua = _run_handset("inband", _presses(PRESSES[:2]))
    assert _events(packets) == {} and ua.infos == []


def test_dtmf_relay_body_round_trips() -> None:
    body = dtmf_relay_body("#", 250)
    assert body == b"Signal=#\r\nDuration=250\r\n"
    assert parse_dtmf_info("application/dtmf-relay", body) == ("#", 250)
    with pytest.raises(ValueError):
        dtmf_relay_body("X", 100)


def test_an_open_event_nobody_ends_stops_at_the_longest_duration() -> None:
    tx = DtmfSender(RtpSender(ssrc=1, payload_type=0, seq=0, timestamp=0), DTMF_PT)
    tx.start("9", 0.0, None)
    ends = []
    for k in range(500):
        packets, _ = tx.on_slot(k * 0.02)
        tx.rtp.skip(160)
        ends += [decode_event(RtpPacket.parse(p).payload) for p in packets]
        if not tx.busy:
            break
    assert [e.end for e in ends[-3:]] == [True] * 3
    assert ends[-1].duration == 8000 * 8  # 8 s
    assert not tx.finish(100)  # nothing open any more


@pytest.mark.parametrize("ms", [60, 100, 400, 1500, 4000])
def test_far_end_digits_are_played_to_the_handset_for_their_duration(ms: int) -> None:
    """RFC 4733 (DigitReceived.duration_ms) and SIP INFO (Duration=) both end here."""
    handset = _Handset()
    lp = _line_port(handset)
    lp.play_digit("6", ms)
    for _ in range(ms // 20 + 20):
        lp.play(bytes(FRAME_BYTES))
    det = DtmfDetector()
    for frame in handset.ear:
        det.feed(frame)
    (end,) = det.ended()
    assert end.digit == "6"
    assert ms - 5 <= end.duration_ms <= ms + 5


@pytest.mark.parametrize("ms", [60, 200, 1200])
def test_rfc4733_events_sound_on_the_handset_while_the_key_is_down(ms: int) -> None:
    """DigitStarted starts the tone at the first packet; the end gives it its exact length."""
    from gateway.media.telephone_event import DigitReceived, DigitStarted

    a, b = _stream(), _stream()
    handset = _Handset()
    lp = _line_port(handset)
    a.send_dtmf("8", 0.0, ms)
    first_packet_tick = None
    for k in range(ms // 20 + 30):
        now = k * 0.020
        for data in a.send_due(now + 0.0001):
            for ev in b.receive(data, ("127.0.0.1", 4000), now):
                if isinstance(ev, DigitStarted):
                    first_packet_tick = k if first_packet_tick is None else first_packet_tick
                    lp.start_digit(ev.digit)
                elif isinstance(ev, DigitReceived):
                    lp.play_digit(ev.digit, ev.duration_ms)
        lp.play(bytes(FRAME_BYTES))  # the bridge's frame; digit audio takes its place
    assert first_packet_tick is not None
    ear = b"".join(handset.ear)
    x = np.frombuffer(ear, dtype="<i2")
    onset = int(np.argmax(np.abs(x) > 1000)) / SAMPLE_RATE
    assert onset <= (first_packet_tick + 1) * 0.020, "the tone starts with the event"
    det = DtmfDetector()
    det.feed(ear)
    (end,) = det.ended()
    assert end.digit == "8"
    want = -(-ms // 20) * 20  # the sender's whole slots
    assert want - 5 <= end.duration_ms <= want + 5, (want, end)


def test_digit_player_edges() -> None:
    from gateway.dsp.dtmf import DigitPlayer

    p = DigitPlayer()
    p.start("5")
    for _ in range(10):
        assert p.next_frame() is not None
    p.end("5", 100)  # already sounded 200 ms: stops now, then the gap
    tail = [p.next_frame() for _ in range(4)]
    assert tail[:3] == [bytes(FRAME_BYTES)] * 3 and tail[3] is None
    p.start("1")
    for _ in range(400):
        p.next_frame()  # 8 s: the player gives up waiting
    assert not p.busy or p.next_frame() == bytes(FRAME_BYTES)
    p.end("1", 9000)  # the late end of that digit adds nothing
    while p.next_frame() is not None:
        pass
    p.end("2", 100)  # SIP INFO: no start, a whole tone queued
    assert p.busy
