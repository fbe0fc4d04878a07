"""The audio bridge joins any two call legs: RTP to port and port to port, whatever the
ports' kinds, and never needs to know what a handset is."""

from __future__ import annotations

import math
import sys
from array import array
from collections import deque

from gateway.dsp import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME
from gateway.dsp.dtmf import generate as dtmf_generate
from gateway.media.stream import MediaStream
from gateway.runtime.bridge import PortLeg, RtpLeg, bridge, move, plan, send_first
from gateway.runtime.ports import PlainPort
from gateway.runtime.sip_calls import Call
from hal.base import AudioPort


def tone_frames(hz: float, count: int, dbfs: float = -12.0) -> list[bytes]:
    amp = 32767 * 10 ** (dbfs / 20)
    frames = []
    for f in range(count):
        samples = array("h", (round(amp * math.sin(2 * math.pi * hz * (f * FRAME_SAMPLES + i)
                                                    / SAMPLE_RATE))
                              for i in range(FRAME_SAMPLES)))
        if sys.byteorder == "big":
            samples.byteswap()
        frames.append(samples.tobytes())
    return frames


def frequency(frames: list[bytes]) -> float:
    """Zero-crossing estimate of a steady tone's frequency."""
    pcm = array("h", b"".join(frames))
    if sys.byteorder == "big":
        pcm.byteswap()
    crossings = sum(1 for a, b in zip(pcm, pcm[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(pcm) / SAMPLE_RATE)


class FakeAudio(AudioPort):
    """A hal audio port: plays `source` frames into the mouthpiece, keeps what it is given."""

    def __init__(self, source: list[bytes]) -> None:
        self.source = deque(source)
        self.heard: list[bytes] = []
        self.reads = 0

    def read_frame(self) -> bytes | None:
        self.reads += 1
        return self.source.popleft() if self.source else None

    def write_frame(self, frame: bytes) -> None:
        assert len(frame) == FRAME_BYTES
        self.heard.append(frame)

    def close(self) -> None:
        pass


class NoMachine:
    """The bridge never touches a port's state machine."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the bridge used the state machine ({name})")


def port(name: str, kind: str, source: list[bytes]) -> tuple[PlainPort, FakeAudio]:
    audio = FakeAudio(source)
    return PlainPort(name, name, kind, None, audio, NoMachine()), audio  # type: ignore[arg-type]


class LoopbackRtp:
    """Stands in for the RTP socket: what our stream sends, the far end's stream receives."""

    def __init__(self, ours: MediaStream, far: MediaStream) -> None:
        self.ours, self.far = ours, far

    def tick(self, now: float) -> None:
        self.send_rtp(now)
        self.after_rtp(now)

    def send_rtp(self, now: float) -> None:
        for packet in self.ours.send_due(now):
            self.far.receive(packet, ("127.0.0.1", 4000), now)

    def after_rtp(self, now: float) -> None:
        pass  # no RTCP over this stand-in


def stream(ssrc: int, port: int) -> MediaStream:
    return MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                       remote_addr=("127.0.0.1", port), ssrc=ssrc, seq=100, timestamp=1000,
                       now=0.0)


def test_frames_move_both_ways_between_any_two_legs() -> None:
    a, audio_a = port("a", "gsm", tone_frames(440, 5))
    b, audio_b = port("b", "fxo", tone_frames(1000, 5))
    for _ in range(5):
        a.capture(), b.capture()
        bridge([(PortLeg(a, True), PortLeg(b, True))], [], 0.0)
    assert audio_b.heard == tone_frames(440, 5)
    assert audio_a.heard == tone_frames(1000, 5)


def test_a_leg_that_does_not_accept_audio_gets_none_and_the_source_is_not_read() -> None:
    class Recording:
        def __init__(self, accepts: bool) -> None:
            self.accept, self.reads, self.got = accepts, 0, []

        def accepts(self) -> bool:
            return self.accept

        def read_frame(self, now: float) -> bytes:
            self.reads += 1
            return b"\x01" * FRAME_BYTES

        def write_frame(self, frame: bytes | None, now: float) -> None:
            self.got.append(frame)

    src, dst = Recording(True), Recording(False)
    move(src, dst, 0.0)
    assert (src.reads, dst.got) == (0, [None])
    dst.accept = True
    move(src, dst, 0.0)
    assert (src.reads, dst.got[-1]) == (1, b"\x01" * FRAME_BYTES)


def test_port_and_rtp_legs_carry_tones_both_ways() -> None:
    p, audio = port("gsm1", "gsm", tone_frames(440, 60))
    ours, far = stream(1, 4000), stream(2, 5000)
    rtp = LoopbackRtp(ours, far)
    back = LoopbackRtp(far, ours)
    far_tone = tone_frames(1000, 60)
    far_heard: list[bytes] = []
    call = Call("c1", p, "out", "sip:1@x", "sip", 0.0, media=ours, rtp=rtp)  # type: ignore[arg-type]
    call.audio = True
    p.call_id = "c1"
    for n in range(60):
        now = 0.02 * n
        p.capture()
        pairs, idle = plan([p], {"c1": call})  # type: ignore[dict-item]
        assert idle == [] and isinstance(pairs[0][1], RtpLeg)
        send_first(pairs, now)  # as Gateway._tick: the RTP that is due, then the bridge
        bridge(pairs, idle, now)
        far.push_frame(far_tone[n])
        back.tick(now)
        far_heard.append(far.pull_frame(now))
    assert abs(frequency(far_heard[-20:]) - 440) < 10  # the port's tone went out as RTP
    assert abs(frequency(audio.heard[-20:]) - 1000) < 20  # the RTP tone reached the port


def test_a_port_to_port_call_with_no_rtp_joins_the_two_ports_once() -> None:
    a, audio_a = port("modem", "gsm", tone_frames(440, 3))
    b, audio_b = port("pstn", "fxo", tone_frames(1000, 3))
    c, audio_c = port("spare", "gsm", tone_frames(700, 3))
    ca = Call("ca", a, "out", "pstn", "local", 0.0)
    cb = Call("cb", b, "in", "modem", "local", 0.0)
    ca.peer, cb.peer = cb, ca
    a.call_id, b.call_id = "ca", "cb"
    calls = {"ca": ca, "cb": cb}
    for _ in range(3):
        for p in (a, b, c):
            p.capture()
        ca.audio = cb.audio = True
        pairs, idle = plan([a, b, c], calls)
        assert len(pairs) == 1 and len(idle) == 1
        assert not any(isinstance(leg, RtpLeg) for pair in pairs for leg in pair)
        bridge(pairs, idle, 0.0)
    assert audio_b.heard == tone_frames(440, 3)
    assert audio_a.heard == tone_frames(1000, 3)
    assert audio_c.heard == [SILENCE_FRAME] * 3  # not in a call: silence, nobody's audio


def test_audio_waits_for_each_side_to_connect() -> None:
    a, audio_a = port("a", "gsm", tone_frames(440, 1))
    b, audio_b = port("b", "gsm", tone_frames(1000, 1))
    ca, cb = Call("ca", a, "out", "b", "local", 0.0), Call("cb", b, "in", "a", "local", 0.0)
    ca.peer, cb.peer = cb, ca
    a.call_id, b.call_id = "ca", "cb"
    ca.audio = True  # the caller hears the callee (early media); the callee hears nothing yet
    a.capture(), b.capture()
    pairs, idle = plan([a, b], {"ca": ca, "cb": cb})
    bridge(pairs, idle, 0.0)
    assert audio_a.heard == tone_frames(1000, 1)
    assert audio_b.heard == [SILENCE_FRAME]


def test_only_ports_that_dial_in_band_listen_for_digits() -> None:
    digits = dtmf_generate("5", 100)
    frames = [digits[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
              for i in range(0, len(digits), FRAME_BYTES)]
    p, _ = port("gsm1", "gsm", frames)
    heard = []
    for _ in frames:
        p.capture()
        heard += p.digits_heard()
    assert heard == []
