"""The daemon's 20 ms tick sends every call's RTP before it does any call's audio work.

With the DSP (echo canceller, DTMF detector) done call by call before each call's packet,
the 64th stream of a tick left after 63 calls' processing, and its pacing jittered with
their cost. These drive the production `Gateway._tick` with plain ports whose capture is
logged, and RTP endpoints whose sends are logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config.loader import load_default
from gateway.dsp import FRAME_BYTES, g711
from gateway.media.rtp import RtpPacket
from gateway.media.stream import MediaStream
from gateway.runtime.app import Gateway
from gateway.runtime.ports import PlainPort

CALLS = 3


class LoggedAudio:
    """A port's audio: each capture is logged, and says a frame numbered by the tick."""

    def __init__(self, name: str, log: list[tuple[str, str, int]]) -> None:
        self.name = name
        self.log = log
        self.n = 0

    def read_frame(self) -> bytes:
        self.n += 1
        self.log.append(("capture", self.name, self.n))
        return (1000 * self.n).to_bytes(2, "little") * (FRAME_BYTES // 2)

    def write_frame(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class LoggedRtp:
    """Stands in for RtpEndpoint: `send_rtp` sends what the stream has due, logged."""

    def __init__(self, name: str, stream: MediaStream, log: list[tuple[str, str, int]]) -> None:
        self.name = name
        self.stream = stream
        self.log = log

    def tick(self, now: float) -> None:
        self.send_rtp(now)
        self.after_rtp(now)

    def send_rtp(self, now: float) -> None:
        for data in self.stream.send_due(now):
            self.log.append(("send", self.name, RtpPacket.parse(data).sequence))

    def after_rtp(self, now: float) -> None:
        pass  # RTCP and digit timeouts: not what these tests look at


class Machine:
    """A port machine with nothing to say (the tick only reads `dtmf_digit`)."""

    def dtmf_digit(self, digit: str, now: float) -> None:
        pass

    def actions(self) -> list[Any]:
        return []

    def get_timer(self) -> None:
        return None


@pytest.fixture
def box() -> Iterator[tuple[Gateway, list[tuple[str, str, int]], list[MediaStream]]]:
    loop = asyncio.new_event_loop()
    gw = Gateway(load_default(), loop=loop)
    log: list[tuple[str, str, int]] = []
    streams = []
    for i in range(CALLS):
        name = f"p{i}"
        port = PlainPort(name, str(200 + i), "fxs", SimpleNamespace(options={}),
                         LoggedAudio(name, log), Machine(),  # type: ignore[arg-type]
                         call_id=f"c{i}")
        gw.ports[name] = port
        stream = MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                             remote_addr=("127.0.0.1", 4000 + 2 * i), ssrc=i + 1, seq=100,
                             timestamp=0, now=0.0)
        streams.append(stream)
        gw.calls[f"c{i}"] = SimpleNamespace(  # type: ignore[assignment]
            call_id=f"c{i}", port=port, kind="sip", state="connected", peer=None,
            rtp=LoggedRtp(name, stream, log), media=stream, audio=True, held=False)
    yield gw, log, streams
    loop.close()


def test_every_stream_sends_before_any_port_is_captured(box: Any) -> None:
    gw, log, _ = box
    for k in range(10):
        log.clear()
        gw._tick(k * 0.020 + 0.0001)
        kinds = [kind for kind, _, _ in log]
        # the old tick: capture p0, send p0, capture p1, send p1, ...
        assert kinds == ["send"] * CALLS + ["capture"] * CALLS, k


def test_each_packet_carries_the_frame_captured_one_tick_before(box: Any) -> None:
    gw, log, streams = box
    sent: list[bytes] = []
    for s in streams[:1]:
        real = s.send_due

        def capture_payload(now: float, real: Any = real) -> list[bytes]:
            out = real(now)
            sent.extend(RtpPacket.parse(p).payload for p in out)
            return out

        s.send_due = capture_payload  # type: ignore[method-assign]
    for k in range(6):
        gw._tick(k * 0.020 + 0.0001)
    # one packet per tick; the first is silence (nothing captured yet), then frame k-1
    # (20 ms more delay from port to RTP than when each call sent after its own capture)
    assert len(sent) == 6
    levels = [int.from_bytes(g711.decode(p, "PCMU")[:2], "little") for p in sent]
    assert levels[0] == 0 and streams[0].stats()["frames_missing"] == 1
    assert [round(v / 1000) for v in levels[1:]] == [1, 2, 3, 4, 5]


def test_send_first_reaches_the_rtp_legs_of_a_conference() -> None:
    from gateway.runtime.bridge import MixLeg, PortLeg, RtpLeg, send_first

    ticked: list[str] = []

    class Rtp:
        def __init__(self, name: str) -> None:
            self.name = name

        def send_rtp(self, now: float) -> None:
            ticked.append(self.name)

        def after_rtp(self, now: float) -> None:
            ticked.append(self.name + " rtcp")

    port = PlainPort("p", "200", "fxs", SimpleNamespace(options={}),
                     LoggedAudio("p", []), Machine())  # type: ignore[arg-type]
    legs = [RtpLeg(cast_any(None), cast_any(Rtp(n))) for n in ("a", "b")]
    send_first([(PortLeg(port, True), MixLeg(list(legs))),
                (PortLeg(port, True), RtpLeg(cast_any(None), cast_any(Rtp("c"))))], 0.0)
    # every stream's RTP first, then each one's RTCP and digit timeouts
    assert ticked == ["a", "b", "c", "a rtcp", "b rtcp", "c rtcp"]


def cast_any(value: object) -> Any:
    return value
