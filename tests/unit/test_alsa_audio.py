"""The ALSA adapter's logic (hal.audio.alsa) on a fake card whose clock runs off the loop's,
and the drift compensator (hal.audio.drift) on its own."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from hal.audio.alsa import AlsaAudio
from hal.audio.drift import DriftCompensator

RATE = 8000
SETTLE_TICKS = 1500
"""30 s: the compensators have aligned the fill levels with their targets by then."""
EPIPE = 32


class FakeAlsaError(Exception):
    pass


@dataclass
class FakeCard:
    """A sound card with its own crystal: ``ppm`` off the loop clock, pointer moving in
    ``granule``-sample steps (a USB card reports about every millisecond)."""

    ppm: float = 0.0
    granule: int = 8
    t: float = 0.0
    pcms: list[Any] = field(default_factory=list)

    def position(self) -> int:
        samples = int(self.t * (1 + self.ppm * 1e-6) * RATE)
        return samples - samples % self.granule


class FakePlayback:
    def __init__(self, card: FakeCard, buffer: int) -> None:
        self.card, self.buffer = card, buffer
        self.written = 0
        self.start: int | None = None
        self.state_ = "PREPARED"
        self.xruns = 0
        self.queued_log: list[int] = []
        self.closed = False

    def _queued(self) -> int:
        if self.start is None:
            return self.written
        consumed = self.card.position() - self.start
        if consumed > self.written:  # ran dry: the card stops
            self.xruns += 1
            self.state_, self.start, self.written = "XRUN", None, 0
            return 0
        return self.written - consumed

    def info(self) -> dict[str, int]:
        return {"buffer_size": self.buffer}

    def avail(self) -> int:
        queued = self._queued()
        return -EPIPE if self.state_ == "XRUN" else self.buffer - queued

    def state(self) -> str:
        self._queued()
        return self.state_

    def write(self, data: bytes) -> int:
        queued = self._queued()
        if self.state_ == "XRUN":
            self.state_, self.written, queued = "PREPARED", 0, 0
        take = min(len(data) // 2, self.buffer - queued)
        if take and self.start is None:
            self.state_, self.start = "RUNNING", self.card.position() - queued
        self.written += take
        self.queued_log.append(self._queued())
        return take

    def close(self) -> None:
        self.closed = True


class FakeCapture:
    def __init__(self, card: FakeCard, buffer: int, period: int) -> None:
        self.card, self.buffer, self.period = card, buffer, period
        self.start = card.position()
        self.taken = 0
        self.xruns = 0
        self.next_sample = 0
        self.closed = False

    def _ready(self) -> int:
        ready = self.card.position() - self.start - self.taken
        if ready > self.buffer:
            self.xruns += 1
            self.taken += ready  # the card threw it away
            return -EPIPE
        return ready

    def avail(self) -> int:
        return max(0, self._ready())

    def read(self) -> tuple[int, bytes]:
        ready = self._ready()
        if ready < 0:
            return ready, b""
        if ready < self.period:
            return 0, b""
        self.taken += self.period
        out = b"".join(((self.next_sample + i) % 30000).to_bytes(2, "little", signed=True)
                       for i in range(self.period))
        self.next_sample += self.period
        return self.period, out

    def close(self) -> None:
        self.closed = True


class FakeAlsa:
    """Stands in for the pyalsaaudio module."""

    PCM_CAPTURE, PCM_PLAYBACK, PCM_NONBLOCK, PCM_NORMAL = 1, 0, 1, 0
    PCM_FORMAT_S16_LE = 2
    PCM_STATE_XRUN = "XRUN"
    ALSAAudioError = FakeAlsaError

    def __init__(self, card: FakeCard) -> None:
        self.card = card
        self.opened: list[dict[str, Any]] = []

    def PCM(self, kind: int, mode: int, **kw: Any) -> Any:  # noqa: N802 - pyalsaaudio's name
        self.opened.append({"kind": kind, "mode": mode, **kw})
        assert mode == self.PCM_NONBLOCK, "the adapter must never open a blocking PCM"
        buffer = kw["periods"] * kw["periodsize"]
        pcm = (FakeCapture(self.card, buffer, kw["periodsize"]) if kind == self.PCM_CAPTURE
               else FakePlayback(self.card, buffer))
        self.card.pcms.append(pcm)
        return pcm


def run_loop(ppm: float, seconds: float, *, late_s: float = 0.004, seed: int = 7,
             drift: bool = True, granule: int = 8) -> tuple[AlsaAudio, FakePlayback,
                                                            FakeCapture, list[int]]:
    """Tick the adapter every 20 ms of loop time (each tick up to ``late_s`` late, never
    accumulating), as the daemon's clock does: read a frame, write a frame."""
    card = FakeCard(ppm=ppm, granule=granule)
    alsa = FakeAlsa(card)
    audio = AlsaAudio("fake", alsa=alsa, clock=lambda: card.t, drift=drift)
    cap, play = card.pcms
    rng = random.Random(seed)
    gaps_after_start: list[int] = []
    audio.settled = {}  # type: ignore[attr-defined]
    frame = b"\x10\x00" * 160
    for k in range(round(seconds / 0.02)):
        card.t = k * 0.02 + rng.uniform(0.0, late_s)
        got = audio.read_frame()
        if got is None and k > 10:
            gaps_after_start.append(k)
        audio.write_frame(frame)
        if k == SETTLE_TICKS and drift:
            p, c = audio._play_drift, audio._cap_drift
            assert p is not None and c is not None
            audio.settled = {"play": (p.added, p.dropped), "cap": (c.added, c.dropped)}  # type: ignore[attr-defined]
    return audio, play, cap, gaps_after_start


@pytest.mark.parametrize("ppm", [100.0, -100.0, 250.0])
def test_drift_compensated_over_ten_minutes(ppm: float) -> None:
    seconds = 600.0
    audio, play, cap, gaps = run_loop(ppm, seconds)
    drift_samples = ppm * 1e-6 * RATE * seconds  # 480 at 100 ppm
    stats = audio.stats()
    assert play.xruns == 0 and audio.underruns == 0, stats
    assert cap.xruns == 0 and audio.overruns == 0, stats
    assert gaps == [], stats
    assert stats["silence_frames"] == 1 and stats["late_dropped"] == 0, stats
    assert stats["capture_dropped"] == 0, stats
    # the card's playback fill stays bounded around the target (320 samples)
    steady = play.queued_log[500:]
    assert min(steady) > 160 and max(steady) < 480, (min(steady), max(steady))
    # playback: a fast card drains the buffer, so samples are added; capture: dropped.
    # After the first 30 s (aligning the levels) the corrections are the drift, one way only.
    play_d, cap_d = audio._play_drift, audio._cap_drift
    assert play_d is not None and cap_d is not None
    settled: dict[str, tuple[int, int]] = audio.settled  # type: ignore[attr-defined]
    expect = ppm * 1e-6 * RATE * (seconds - SETTLE_TICKS * 0.02)  # 456 at 100 ppm
    play_add = play_d.added - settled["play"][0]
    play_drop = play_d.dropped - settled["play"][1]
    cap_add = cap_d.added - settled["cap"][0]
    cap_drop = cap_d.dropped - settled["cap"][1]
    assert play_add - play_drop == pytest.approx(expect, abs=12), stats
    assert cap_drop - cap_add == pytest.approx(expect, abs=12), stats
    assert min(play_add, play_drop) == 0 and min(cap_add, cap_drop) == 0, stats
    assert play_d.net_corrections == pytest.approx(drift_samples, abs=30), stats
    assert stats["card_ppm"] == pytest.approx(ppm, abs=5), stats


@pytest.mark.parametrize("ppm", [100.0, -250.0])
def test_a_card_whose_pointer_moves_a_period_at_a_time(ppm: float) -> None:
    """I2S DMA reports its position once per period (10 ms here): the fill the adapter
    sees jumps by 80 samples with the phase of its tick, and still nothing runs dry and
    the corrections add up to the drift (within the jump)."""
    seconds = 600.0
    audio, play, cap, gaps = run_loop(ppm, seconds, granule=80)
    stats = audio.stats()
    assert play.xruns == cap.xruns == audio.underruns == audio.overruns == 0, stats
    assert gaps == [] and stats["late_dropped"] == stats["capture_dropped"] == 0, stats
    play_d, cap_d = audio._play_drift, audio._cap_drift
    assert play_d is not None and cap_d is not None
    drift = ppm * 1e-6 * RATE * seconds
    assert play_d.net_corrections == pytest.approx(drift, abs=80), stats
    assert -cap_d.net_corrections == pytest.approx(drift, abs=80), stats
    steady = play.queued_log[500:]
    assert min(steady) > 160 and max(steady) < 480, (min(steady), max(steady))


def test_without_compensation_the_same_card_underruns() -> None:
    """The control: the same +250 ppm card with drift=False runs the playback dry and
    piles up captured audio until whole frames are thrown away."""
    audio, play, cap, gaps = run_loop(250.0, 300.0, drift=False)
    assert audio.underruns > 0
    assert audio.capture_dropped > 0


def test_no_drift_no_corrections() -> None:
    audio, play, cap, gaps = run_loop(0.0, 300.0)
    stats = audio.stats()
    # a few at the start, aligning the levels with the targets; none after that
    assert stats["samples_added"] + stats["samples_dropped"] <= 12, stats
    settled: dict[str, tuple[int, int]] = audio.settled  # type: ignore[attr-defined]
    assert stats["samples_added"] + stats["samples_dropped"] == sum(
        settled["play"] + settled["cap"]), stats
    assert audio.underruns == 0 and gaps == []
    assert stats["card_ppm"] == pytest.approx(0.0, abs=5)


def test_opens_nonblocking_and_measures_latency() -> None:
    card = FakeCard()
    alsa = FakeAlsa(card)
    audio = AlsaAudio("hw:1,0", alsa=alsa, clock=lambda: card.t)
    assert [o["mode"] for o in alsa.opened] == [FakeAlsa.PCM_NONBLOCK] * 2
    assert audio.read_frame() is None  # nothing captured yet: no wait, no frame
    audio.write_frame(bytes(320))
    # primed with silence to the 40 ms target, the frame included
    assert audio.playback_latency_ms == pytest.approx(40.0)
    assert audio.silence_frames == 1
    card.t = 0.05
    assert audio.capture_latency_ms == pytest.approx(50.0)
    audio.close()
    audio.close()
    assert all(p.closed for p in card.pcms)


def test_a_stalled_loop_is_counted_and_recovered() -> None:
    card = FakeCard()
    audio = AlsaAudio("fake", alsa=FakeAlsa(card), clock=lambda: card.t)
    cap, play = card.pcms
    for k in range(50):
        card.t = k * 0.02
        audio.read_frame()
        audio.write_frame(bytes(320))
    card.t += 0.5  # the loop stalls for half a second
    audio.read_frame()
    audio.write_frame(bytes(320))
    assert audio.underruns == 1 and audio.overruns == 1
    for _ in range(50):
        card.t += 0.02
        audio.read_frame()
        audio.write_frame(bytes(320))
    assert audio.underruns == 1 and play.xruns == 1  # re-primed, running again
    assert audio.playback_latency_ms <= 60.0


def test_late_ticks_within_the_cushion_cost_nothing() -> None:
    """Every tenth tick 15 ms late (a busy loop): non-blocking writes ride it out with no
    underrun, no silence inserted and no frame dropped."""
    card = FakeCard()
    audio = AlsaAudio("fake", alsa=FakeAlsa(card), clock=lambda: card.t)
    _, play = card.pcms
    for k in range(500):
        card.t = k * 0.02 + (0.015 if k % 10 == 5 else 0.0)
        audio.read_frame()
        audio.write_frame(b"\x01\x00" * 160)
    assert play.xruns == 0 and audio.underruns == 0
    assert audio.silence_frames == 1 and audio.late_dropped == 0  # the priming frame only
    assert audio.capture_gaps == 0 and audio.capture_dropped == 0


def test_compensator_unit() -> None:
    comp = DriftCompensator(320.0, deadband=4.0, tau_s=1.0, min_gap_s=0.25)
    t, fill, steps = 0.0, 320.0, []
    for _ in range(5000):  # 100 s, the fill falls 2 samples/s (250 ppm at 8 kHz)
        t += 0.02
        fill -= 2 * 0.02
        step = comp.update(fill, t)
        fill += step
        steps.append(step)
    assert comp.dropped == 0
    assert comp.added == pytest.approx(200, abs=6)
    assert comp.fill_drift_ppm == pytest.approx(-250, abs=5)
    with pytest.raises(ValueError, match="drift compensator"):
        DriftCompensator(0)
