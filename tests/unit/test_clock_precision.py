"""The audio tick lands on its deadline although asyncio's epoll wait rounds up to 1 ms."""

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway.runtime.clock import AudioClock


class _Timer:
    def __init__(self, fire_at: float, callback: Callable[[], Any]) -> None:
        self.fire_at = fire_at
        self.callback = callback

    def cancel(self) -> None:
        pass


class EpollLoop:
    """A fake loop that wakes a timer as asyncio on epoll does: the wait for `when` starts
    when the timer is armed (the loop is idle from then on) and lasts `when - now` rounded
    UP to whole milliseconds, plus a fixed wake-up latency."""

    def __init__(self, t: float, wake_latency: float = 30e-6) -> None:
        self.t = t
        self.wake_latency = wake_latency
        self.pending: _Timer | None = None
        self.slept: list[float] = []

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], Any]) -> _Timer:
        wait_ms = math.ceil(max(0.0, when - self.t) * 1000 - 1e-9)
        self.pending = _Timer(self.t + wait_ms / 1000 + self.wake_latency, callback)
        return self.pending

    def sleep(self, seconds: float) -> None:
        """A precise sleep (nanosleep), on this clock."""
        self.slept.append(seconds)
        self.t += seconds

    def run_next(self) -> None:
        timer = self.pending
        assert timer is not None
        self.t = max(self.t, timer.fire_at)
        timer.callback()


@pytest.mark.parametrize("seed", range(5))
def test_ticks_start_within_100us_of_their_deadline_despite_epoll_rounding(seed: int) -> None:
    rng = random.Random(seed)
    loop = EpollLoop(100.0 + rng.random())
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    lateness: list[float] = []
    start = loop.t

    def tick(now: float) -> None:
        lateness.append(loop.time() - (start + len(lateness) * clock.interval))
        assert now >= start + (len(lateness) - 1) * clock.interval  # never before its slot
        loop.t += rng.uniform(0.0005, 0.012)  # this tick's media work

    clock.add(tick)
    clock.start()
    for _ in range(2000):
        loop.run_next()
    assert clock.ticks == 2000 and clock.late == 0
    # Armed at the deadline itself these land 0.03-1.03 ms late (epoll's rounding).
    assert max(lateness) < 100e-6
    assert min(lateness) >= 0.0
    # and the loop is blocked for at most `lead` per tick, about half of it on average
    assert max(loop.slept) <= clock.lead
    assert sum(loop.slept) / len(loop.slept) < 0.8 * clock.lead


def test_a_timer_that_fires_late_is_not_slept_on() -> None:
    loop = EpollLoop(0.0, wake_latency=0.003)  # a busy host: the wake-up comes 3 ms late
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    seen: list[float] = []
    clock.add(seen.append)
    clock.start()
    for _ in range(50):
        loop.run_next()
    assert loop.slept == [] and len(seen) == 50
    assert clock.late == 0  # 3 ms late is late, but still one slot per tick


def test_lead_must_leave_room_in_the_interval() -> None:
    with pytest.raises(ValueError, match="lead"):
        AudioClock(lead=0.015)
