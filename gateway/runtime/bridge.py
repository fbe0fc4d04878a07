"""The audio bridge: every 20 ms, move one frame each way between the two legs of a call.

A leg is anything that gives and takes 20 ms frames of 16-bit linear PCM: an RTP stream
(`RtpLeg`) or a port's audio (`PortLeg`: a handset, an exchange line, a GSM channel). The
bridge joins any two legs, RTP to port or port to port, and never asks what is behind them;
a leg says whether it `accepts` audio right now (a handset playing dial tone does not), and
a leg that is told nothing (`write_frame(None)`) plays its own sound or silence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from gateway.dsp import SILENCE_FRAME
from gateway.media.stream import MediaStream
from gateway.runtime.ports import Port
from gateway.runtime.rtp import RtpEndpoint

if TYPE_CHECKING:  # numpy is loaded by the conference mix, not by an idle gateway
    import numpy as np


class Leg(Protocol):
    """One side of a call, as the bridge sees it."""

    def accepts(self) -> bool:
        """Whether this leg takes the other leg's audio now (if not, the other is not read)."""
        ...

    def read_frame(self, now: float) -> bytes:
        """This tick's frame from the leg (its mouthpiece, or what arrived over RTP)."""
        ...

    def write_frame(self, frame: bytes | None, now: float) -> None:
        """This tick's frame for the leg; None when nothing is bridged to it."""
        ...


class RtpLeg:
    """A SIP call's media: frames are sent as RTP and taken from the jitter buffer."""

    def __init__(self, media: MediaStream, rtp: RtpEndpoint) -> None:
        self.media = media
        self.rtp = rtp

    def accepts(self) -> bool:
        return True

    def read_frame(self, now: float) -> bytes:
        return self.media.pull_frame(now)

    def write_frame(self, frame: bytes | None, now: float) -> None:
        if frame is not None:
            self.media.push_frame(frame)  # sent by the next tick's send_first
        # This tick's RTP, RTCP and digit timeouts were done by send_first, which runs on the
        # same pairs before any leg is written.


class PortLeg:
    """A port's audio in a call; `connected` is the call's audio switch (answered or early)."""

    def __init__(self, port: Port, connected: bool) -> None:
        self.port = port
        self.connected = connected

    def accepts(self) -> bool:
        return self.connected and self.port.accepts_audio()

    def read_frame(self, now: float) -> bytes:
        return self.port.mic  # captured at the start of the tick, before any leg is written

    def write_frame(self, frame: bytes | None, now: float) -> None:
        self.port.play(frame)


class MixLeg:
    """The far ends of a three-way conference, as one leg facing the handset.

    Written the handset's frame, it reads each far leg once and gives each the handset plus
    every other far leg (never its own signal back); read, it returns the far legs' sum for
    the handset. 16-bit linear, saturating.
    """

    def __init__(self, legs: list[Leg]) -> None:
        self.legs = legs
        self._heard = SILENCE_FRAME

    def accepts(self) -> bool:
        return True

    def read_frame(self, now: float) -> bytes:
        return self._heard

    def write_frame(self, frame: bytes | None, now: float) -> None:
        import numpy as np

        far = [np.frombuffer(leg.read_frame(now), dtype="<i2").astype(np.int32)
               for leg in self.legs]
        total = np.sum(far, axis=0) if far else np.zeros(len(SILENCE_FRAME) // 2, np.int32)
        self._heard = _pcm(total)
        near = (np.frombuffer(frame, dtype="<i2").astype(np.int32) if frame is not None
                else np.zeros_like(total))
        for leg, own in zip(self.legs, far, strict=True):
            leg.write_frame(_pcm(near + total - own) if leg.accepts() else None, now)


def _pcm(samples: np.ndarray) -> bytes:
    import numpy as np

    return bytes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


def move(src: Leg, dst: Leg, now: float) -> None:
    """One frame from `src` to `dst`; `src` is only read when `dst` takes it."""
    dst.write_frame(src.read_frame(now) if dst.accepts() else None, now)


def send_first(pairs: Iterable[tuple[Leg, Leg]], now: float) -> None:
    """At the start of a tick, before any port is captured: every bridged RTP leg sends
    what is due, which is the frame the bridge gave it in the previous tick.

    Every stream then leaves within a few microseconds per call of the tick, whatever the
    DSP (echo canceller, DTMF detector) of the calls before it costs, so pacing no longer
    depends on how many calls share the tick. The price: one frame (20 ms) more delay from
    the port to the RTP stream; the far end to port direction is unchanged.
    """
    endpoints = [one.rtp for pair in pairs for leg in pair
                 for one in (leg.legs if isinstance(leg, MixLeg) else (leg,))
                 if isinstance(one, RtpLeg)]
    for rtp in endpoints:  # the RTP alone first: every stream at a steady offset in the tick
        rtp.send_rtp(now)
    for rtp in endpoints:
        rtp.after_rtp(now)


def bridge(pairs: Iterable[tuple[Leg, Leg]], idle: Iterable[Leg], now: float) -> None:
    """One tick: each pair exchanges a frame both ways (a to b first), idle legs get None."""
    for a, b in pairs:
        move(a, b, now)
        move(b, a, now)
    for leg in idle:
        leg.write_frame(None, now)


class BridgedCall(Protocol):
    """What `plan` reads of a runtime call leg (gateway.runtime.sip_calls.Call)."""

    call_id: str
    audio: bool
    media: MediaStream | None
    rtp: RtpEndpoint | None

    @property
    def port(self) -> Port: ...

    @property
    def peer(self) -> BridgedCall | None: ...


def plan(
    ports: Iterable[Port], calls: Mapping[str, BridgedCall]
) -> tuple[list[tuple[Leg, Leg]], list[Leg]]:
    """Which legs to join this tick: each port with its call's other leg, or idle.

    A call with media joins its port to RTP; a port-to-port call (two call records that
    are each other's peer, no RTP) joins the two ports once. A port mixing calls (a
    three-way conference: `mixing` names them) is joined to all their far legs at once.
    Every port appears once.
    """
    pairs: list[tuple[Leg, Leg]] = []
    idle: list[Leg] = []
    joined: set[int] = set()
    ports = list(ports)
    for port in [p for p in ports if getattr(p, "mixing", ())]:  # first: they claim peers
        legs = [leg for cid in port.mixing  # type: ignore[attr-defined]
                if (call := calls.get(cid)) is not None
                and (leg := _other_leg(call, joined)) is not None]
        if legs:
            joined.add(id(port))
            pairs.append((PortLeg(port, True), MixLeg(legs)))
    for port in ports:
        if id(port) in joined:
            continue
        call = calls.get(port.call_id) if port.call_id else None
        other = _other_leg(call, joined) if call is not None else None
        if call is None or other is None:
            idle.append(PortLeg(port, False))
            continue
        pairs.append((PortLeg(port, call.audio), other))
        joined.add(id(port))
    return pairs, idle


def _other_leg(call: BridgedCall, joined: set[int]) -> Leg | None:
    if call.media is not None and call.rtp is not None:
        return RtpLeg(call.media, call.rtp)
    peer = call.peer
    if peer is None or peer.port.call_id != peer.call_id or id(peer.port) in joined:
        return None
    joined.add(id(peer.port))
    return PortLeg(peer.port, peer.audio)

