"""A call's RTP is on the audio clock's grid from its first packet: one packet per tick."""

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway.dsp import SILENCE_FRAME
from gateway.media.session import PacingSchedule
from gateway.media.stream import MediaStream
from gateway.runtime.clock import AudioClock


def test_stream_anchor_gives_exactly_one_packet_on_every_jittered_tick() -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = AudioClock(loop)
        clock._schedule = PacingSchedule(1000.0, 0.020)  # as start() would anchor it
        clock._schedule.due(1000.0 + 7 * 0.020 + 0.003)  # ticks 0..7 have run
        # A call whose media starts at an arbitrary phase, just after tick 7.
        anchor = clock.stream_anchor(1000.0 + 7 * 0.020 + 0.0041)
        stream = PacingSchedule(anchor, 0.020)
        counts = []
        for k in range(8, 3008):
            jitter = (k * 7919 % 97) / 97 * 0.009  # 0..9 ms late, never early
            counts.append(stream.due(1000.0 + k * 0.020 + jitter))
        assert counts == [1] * len(counts)  # the first tick included
    finally:
        loop.close()


def test_unanchored_phase_shows_the_zero_then_two_pattern() -> None:
    stream = PacingSchedule(1000.0002, 0.020)  # slot boundaries just after the ticks
    counts = [stream.due(1000.0 + k * 0.020 + (0.0005 if k % 2 else 0.0)) for k in range(1, 50)]
    assert 0 in counts and 2 in counts


class _Handle:
    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback

    def cancel(self) -> None:
        pass


class _Loop:
    """A settable clock that records call_at; enough of a loop for AudioClock."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.pending: _Handle | None = None

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], Any]) -> _Handle:
        self.pending = _Handle(when, callback)
        return self.pending

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def fire(self, offset: float) -> None:
        """Run the pending timer `offset` seconds after its deadline (negative: early)."""
        handle = self.pending
        assert handle is not None
        self.t = max(self.t, handle.when + offset)
        handle.callback()


@pytest.mark.parametrize("seed", range(20))
def test_media_started_between_ticks_sends_one_packet_per_tick_from_the_first(seed: int) -> None:
    """The daemon's path: AudioClock ticks, the stream anchored by stream_anchor."""
    rng = random.Random(seed)
    loop = _Loop(500.0)
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    per_tick: list[int] = []
    media: list[MediaStream] = []

    def tick(now: float) -> None:
        if media:
            media[0].push_frame(SILENCE_FRAME)
            per_tick.append(len(media[0].send_due(now)))

    clock.add(tick)
    clock.start()
    for _ in range(rng.randrange(1, 30)):
        loop.fire(rng.uniform(0.0, 0.004))
    # The SIP answer arrives at some point between two ticks, then media starts.
    loop.t += rng.uniform(0.0, 0.0199)
    media.append(MediaStream(codec="PCMU", payload_type=0, dtmf_pt=None,
                             remote_addr=("127.0.0.1", 9), ssrc=1, seq=1, timestamp=1,
                             now=clock.stream_anchor(loop.time())))
    for _ in range(500):
        # asyncio may run a timer up to its clock resolution early, or a few ms late
        loop.fire(rng.choice((-1e-9, 0.0)) + rng.uniform(0.0, 0.012) * (rng.random() < 0.5))
    assert per_tick == [1] * len(per_tick)
    assert clock.late == 0 and len(per_tick) == 500
