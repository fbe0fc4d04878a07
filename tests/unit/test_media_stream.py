"""MediaStream end to end with a fake clock: tone fidelity, DTMF, latching, direction, stats."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gateway.dsp import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME
from gateway.media.rtp import RtpPacket
from gateway.media.stream import MediaStream, RemoteLatched
from gateway.media.telephone_event import DigitReceived, DigitStarted, decode_event

A_ADDR = ("127.0.0.1", 40000)
B_ADDR = ("127.0.0.1", 40002)
SLOT = 0.020


def make(now: float = 0.0, *, codec: str = "PCMU", pt: int = 0, dtmf_pt: int | None = 101,
         remote: tuple[str, int] = B_ADDR, seq: int = 1000, ts: int = 50000,
         latch: bool = True) -> MediaStream:
    return MediaStream(codec=codec, payload_type=pt, dtmf_pt=dtmf_pt, remote_addr=remote,
                       ssrc=0x1234ABCD, seq=seq, timestamp=ts, now=now, latch=latch)


def tone(freq: float, amplitude: float, n_frames: int) -> list[bytes]:
    t = np.arange(n_frames * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")
    return [pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].tobytes() for i in range(n_frames)]


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))


def peak_hz(x: np.ndarray) -> float:
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(freqs[int(np.argmax(spectrum))])


@pytest.mark.parametrize("codec,pt", [("PCMU", 0), ("PCMA", 8)])
def test_1khz_tone_survives_encode_packet_jitterbuffer_decode(codec: str, pt: int) -> None:
    rng = random.Random(11)
    # start numbering just below both wraps so the call crosses them
    a = make(codec=codec, pt=pt, seq=65500, ts=2**32 - 20 * FRAME_SAMPLES)
    b = make(codec=codec, pt=pt, remote=A_ADDR)
    frames = tone(1000.0, 8000.0, 150)
    in_flight: list[tuple[float, bytes]] = []
    heard: list[bytes] = []
    for k in range(180):
        now = k * SLOT
        if k < len(frames):
            a.push_frame(frames[k])
        for data in a.send_due(now):
            in_flight.append((now + rng.uniform(0.0, 0.030), data))  # network jitter, reorders
        in_flight.sort(key=lambda x: x[0])
        while in_flight and in_flight[0][0] <= now:
            b.receive(in_flight.pop(0)[1], A_ADDR, now)
        heard.append(b.pull_frame(now))
    pcm = np.frombuffer(b"".join(heard), dtype="<i2")
    sent = np.frombuffer(b"".join(frames), dtype="<i2")
    voiced = np.nonzero(np.abs(pcm) > 1000)[0]
    assert len(voiced) > 0
    body = pcm[voiced[0] + 800: voiced[0] + 800 + 8000]  # one second from inside the tone
    assert len(body) == 8000
    assert peak_hz(body) == pytest.approx(1000.0, abs=2.0)
    assert abs(rms_db(body) - rms_db(sent)) < 0.5
    st = b.stats()
    assert st["lost"] == 0 and st["dropped_malformed"] == 0
    assert st["late"] == 0  # the buffer absorbed 30 ms of jitter


def test_stream_sends_one_packet_per_slot_with_sample_timestamps() -> None:
    a = make(now=10.0, seq=65534, ts=2**32 - 160)
    packets = []
    for k in range(5):
        a.push_frame(SILENCE_FRAME)
        packets += [RtpPacket.parse(p) for p in a.send_due(10.0 + k * SLOT)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2]
    assert [p.timestamp for p in packets] == [2**32 - 160, 0, 160, 320, 480]
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert all(p.payload == b"\xff" * 160 for p in packets)
    assert a.next_deadline() == pytest.approx(10.0 + 5 * SLOT)


def test_missing_frames_send_silence_and_stalls_skip_ahead() -> None:
    a = make(now=0.0, ts=0)
    first = [RtpPacket.parse(p) for p in a.send_due(0.0)]
    assert len(first) == 1 and first[0].payload == b"\xff" * 160
    # the caller stalls for a second: one packet, stamped where media time has got to
    late = [RtpPacket.parse(p) for p in a.send_due(1.0)]
    assert len(late) == 1
    assert late[0].timestamp == 50 * 160 and late[0].marker
    st = a.stats()
    assert st["skipped_slots"] == 49 and st["frames_missing"] == 2


def test_push_frame_checks_size_and_bounds_the_queue() -> None:
    a = make()
    with pytest.raises(ValueError, match="320 bytes"):
        a.push_frame(b"\x00" * 100)
    for _ in range(8):
        a.push_frame(SILENCE_FRAME)
    assert a.stats()["frames_dropped"] == 3


def run_pair(a: MediaStream, b: MediaStream, slots: int, start: float = 0.0,
             before: dict[int, str] | None = None) -> tuple[list[RtpPacket], list[object]]:
    sent: list[RtpPacket] = []
    events: list[object] = []
    for k in range(slots):
        now = start + k * SLOT
        if before and k in before:
            a.send_dtmf(before[k], now)
        a.push_frame(tone(440.0, 3000.0, 1)[0])
        for data in a.send_due(now):
            sent.append(RtpPacket.parse(data))
            events += b.receive(data, A_ADDR, now)
        events += b.poll(now)
        b.pull_frame(now)
    return sent, events


def test_dtmf_digit_arrives_once_and_replaces_the_audio() -> None:
    a = make()
    b = make(remote=A_ADDR)
    sent, events = run_pair(a, b, 30, before={5: "5", 6: "#"})
    assert [e for e in events if isinstance(e, DigitReceived)] == [
        DigitReceived("5", 100), DigitReceived("#", 100)]
    audio = [p for p in sent if p.payload_type == 0]
    dtmf = [p for p in sent if p.payload_type == 101]
    first_event_ts = dtmf[0].timestamp
    # no audio is stamped inside the 100 ms the first event covers
    assert not [p for p in audio if first_event_ts <= p.timestamp < first_event_ts + 800]
    # the audio clock moved through the event: timestamps stay one slot apart overall
    all_ts = sorted({p.timestamp for p in audio} | {p.timestamp for p in dtmf})
    assert all((t - all_ts[0]) % 160 == 0 for t in all_ts)
    seqs = [p.sequence for p in sent]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert a.stats()["dtmf_sent"] == 2 and b.stats()["dtmf_received"] == 2


def test_dtmf_without_telephone_event_leaves_the_audio_alone() -> None:
    a = make(dtmf_pt=None, ts=0)
    assert not a.can_send_dtmf
    a.send_dtmf("1", 0.0)
    sent = []
    for k in range(8):
        a.push_frame(tone(697.0, 3000.0, 1)[0])
        sent += [RtpPacket.parse(p) for p in a.send_due(k * SLOT)]
    assert [p.payload_type for p in sent] == [0] * 8  # nothing suppressed, no events
    assert [p.timestamp for p in sent] == [160 * k for k in range(8)]
    assert a.stats()["dtmf_inband"] == 1 and a.stats()["dtmf_sent"] == 0


def test_lost_dtmf_end_is_reported_by_poll() -> None:
    a = make()
    b = make(remote=A_ADDR)
    events: list[object] = []
    a.send_dtmf("7", 0.0)
    for k in range(5):
        for data in a.send_due(k * SLOT):
            if RtpPacket.parse(data).payload_type == 101 and decode_event(
                    RtpPacket.parse(data).payload).end:
                continue  # every end packet lost
            events += b.receive(data, A_ADDR, k * SLOT)
    assert events == [DigitStarted("7")]
    assert b.next_deadline() <= 5 * SLOT
    events += b.poll(1.0)
    assert events == [DigitStarted("7"), DigitReceived("7", 60)]


def audio_packet(seq: int, pt: int = 0, ssrc: int = 0x55) -> bytes:
    return bytes(RtpPacket(pt, seq, seq * 160, ssrc, payload=b"\xff" * 160))


def test_symmetric_rtp_latches_to_the_real_source() -> None:
    b = make(remote=("192.0.2.10", 4000))
    nat = ("198.51.100.7", 61000)
    events = b.receive(audio_packet(1), nat, 0.0)
    assert events == [RemoteLatched(("192.0.2.10", 4000), nat)]
    assert b.remote_addr == nat
    # a third party cannot take over with a stray packet ...
    intruder = ("203.0.113.9", 5000)
    assert b.receive(audio_packet(900, ssrc=0x66), intruder, 0.02) == []
    assert b.remote_addr == nat and b.stats()["dropped_foreign"] == 1
    # ... but a peer whose NAT mapping really moved takes over after a short run in sequence
    moved = ("198.51.100.7", 61002)
    out = []
    for i in range(3):
        out += b.receive(audio_packet(2 + i), moved, 0.04 + i * 0.02)
    assert out == [RemoteLatched(nat, moved)] and b.remote_addr == moved


def test_latching_can_be_turned_off() -> None:
    b = make(remote=("192.0.2.10", 4000), latch=False)
    assert b.receive(audio_packet(1), ("198.51.100.7", 61000), 0.0) == []
    assert b.remote_addr == ("192.0.2.10", 4000)
    assert b.stats()["packets_received"] == 1


def test_bad_datagrams_are_counted_not_played() -> None:
    b = make(remote=A_ADDR)
    assert b.receive(b"\x00" * 5, A_ADDR, 0.0) == []
    assert b.receive(b"\x40" + bytes(20), A_ADDR, 0.0) == []
    assert b.receive(audio_packet(1, pt=18), A_ADDR, 0.0) == []
    rtcp_rr = bytes([0x81, 201, 0, 7]) + bytes(28)
    assert b.receive(rtcp_rr, A_ADDR, 0.0) == []
    st = b.stats()
    assert st["dropped_malformed"] == 2 and st["wrong_payload_type"] == 1
    assert st["rtcp_received"] == 1 and st["packets_received"] == 0
    assert all(b.pull_frame(k * SLOT) == SILENCE_FRAME for k in range(5))


def test_hold_stops_sending_and_resume_keeps_media_time() -> None:
    a = make(now=0.0, ts=0)
    assert len(a.send_due(0.0)) == 1
    a.set_direction("recvonly")
    a.push_frame(SILENCE_FRAME)
    assert all(a.send_due(k * SLOT) == [] for k in range(1, 20))
    a.set_direction("sendrecv")
    resumed = [RtpPacket.parse(p) for p in a.send_due(20 * SLOT)]
    assert len(resumed) == 1
    assert resumed[0].timestamp == 20 * 160 and resumed[0].marker
    with pytest.raises(ValueError, match="direction"):
        a.set_direction("sideways")


def test_sendonly_ignores_what_arrives() -> None:
    b = make(remote=A_ADDR)
    b.set_direction("sendonly")
    b.receive(audio_packet(1), A_ADDR, 0.0)
    assert b.stats()["dropped_direction"] == 1 and b.stats()["packets_received"] == 0


def test_reinvite_switches_codec_and_address_but_keeps_numbering() -> None:
    a = make(now=0.0, seq=10, ts=0)
    first = RtpPacket.parse(a.send_due(0.0)[0])
    a.update_remote(("127.0.0.1", 50000), "PCMA", 8, None)
    a.push_frame(SILENCE_FRAME)
    second = RtpPacket.parse(a.send_due(SLOT)[0])
    assert (first.payload_type, second.payload_type) == (0, 8)
    assert second.sequence == first.sequence + 1 and second.ssrc == first.ssrc
    assert second.payload == b"\xd5" * 160
    assert a.remote_addr == ("127.0.0.1", 50000) and a.codec == "PCMA"
    assert not a.can_send_dtmf


def test_stats_report_loss_and_quality() -> None:
    b = make(remote=A_ADDR)
    for seq in range(100):
        if seq % 10 != 3:
            b.receive(audio_packet(seq), A_ADDR, seq * SLOT)
        b.pull_frame(seq * SLOT)
    st = b.stats()
    assert st["packets_received"] == 90 and st["lost"] == 10
    assert st["bytes_received"] == 90 * (12 + 160)
    assert st["loss_fraction"] == pytest.approx(0.1)
    assert st["jitter_ms"] == pytest.approx(0.0, abs=1e-6)
    assert 1.0 <= st["mos"] < 3.5  # 10 % loss is poor whatever the delay
    clean = make(remote=A_ADDR)
    for seq in range(50):
        clean.receive(audio_packet(seq), A_ADDR, seq * SLOT)
    assert clean.stats()["mos"] > 4.3
    assert len(b.pull_frame(3.0)) == FRAME_BYTES


def test_a_frame_queued_before_a_codec_change_goes_out_in_the_new_codec() -> None:
    # push_frame encodes at once (the tick's send pass only numbers and sends); a re-INVITE
    # that switches PCMU -> PCMA between the push and the send must not leak a PCMU payload
    from gateway.dsp import g711

    a = make(codec="PCMU", pt=0)
    frame = tone(440.0, 6000.0, 1)[0]
    a.push_frame(frame)
    a.update_remote(B_ADDR, "PCMA", 8, 101)
    (packet,) = a.send_due(0.0)
    parsed = RtpPacket.parse(packet)
    assert parsed.payload_type == 8
    assert parsed.payload == g711.encode(frame, "PCMA") != g711.encode(frame, "PCMU")


def test_sent_headers_are_plain_rtp_version_2_with_the_marker_on_the_first() -> None:
    a = make(seq=65535, ts=2**32 - FRAME_SAMPLES)
    for frame in tone(1000.0, 8000.0, 2):
        a.push_frame(frame)
    first, second = (RtpPacket.parse(p) for now in (0.0, SLOT) for p in a.send_due(now))
    assert (first.marker, first.sequence, first.timestamp) == (True, 65535, 2**32 - FRAME_SAMPLES)
    assert (second.marker, second.sequence, second.timestamp) == (False, 0, 0)
    assert first.ssrc == second.ssrc == 0x1234ABCD and first.csrc == () and first.padding == 0
