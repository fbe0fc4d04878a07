import asyncio

from gateway.media.session import PacingSchedule
from gateway.runtime.clock import AudioClock


def test_stream_anchor_gives_exactly_one_packet_per_jittered_tick() -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = AudioClock(loop)
        clock._schedule = PacingSchedule(1000.0, 0.020)  # as start() would anchor it
        # A call whose media starts at an arbitrary phase, just after a tick boundary.
        anchor = clock.stream_anchor(1000.0 + 7 * 0.020 + 0.0001)
        stream = PacingSchedule(anchor, 0.020)
        counts = []
        for k in range(8, 3008):
            jitter = (k * 7919 % 97) / 97 * 0.009  # 0..9 ms late, never early
            counts.append(stream.due(1000.0 + k * 0.020 + jitter))
        assert counts[1:] == [1] * (len(counts) - 1)
    finally:
        loop.close()


def test_unanchored_phase_shows_the_zero_then_two_pattern() -> None:
    stream = PacingSchedule(1000.0002, 0.020)  # slot boundaries just after the ticks
    counts = [stream.due(1000.0 + k * 0.020 + (0.0005 if k % 2 else 0.0)) for k in range(1, 50)]
    assert 0 in counts and 2 in counts
