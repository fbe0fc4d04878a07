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
    # epoll's rounding is the timer's only error here: the lead stays near its 1.2 ms
    # minimum, and the loop is blocked for under 1 ms per tick on average
    assert clock.min_lead <= clock.lead < 1.5e-3
    assert max(loop.slept) < 1.5e-3
    assert sum(loop.slept) / len(loop.slept) < 1.0e-3


def test_a_timer_that_keeps_waking_late_gets_a_longer_lead_and_lands_on_time_again() -> None:
    # A loaded host: every epoll wake comes 2.5 ms past the time asked for (the media bench
    # on this 2-core VM saw up to 2 ms). The first ticks are late; the lead then grows to
    # cover the overshoot and the rest land on their deadline.
    loop = EpollLoop(0.0, wake_latency=0.0025)
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    lateness: list[float] = []
    start = loop.t

    def tick(now: float) -> None:
        lateness.append(loop.time() - (start + len(lateness) * clock.interval))

    clock.add(tick)
    clock.start()
    for _ in range(200):
        loop.run_next()
    assert max(lateness[:2]) > 1e-3  # armed 1.2 ms early, woken 2.5-3.5 ms later
    assert max(lateness[10:]) < 100e-6  # a few ticks to see the worst of the rounding too
    assert 2.5e-3 < clock.lead <= clock.max_lead
    assert clock.late == 0 and clock.ticks == 200


def test_a_timer_later_than_the_longest_lead_is_not_slept_on() -> None:
    loop = EpollLoop(0.0, wake_latency=0.006)  # 6 ms late: more than the 4 ms lead can cover
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    seen: list[float] = []
    clock.add(seen.append)
    clock.start()
    for _ in range(50):
        loop.run_next()
    assert loop.slept == [] and len(seen) == 50
    assert clock.lead == clock.max_lead
    assert clock.late == 0  # late, but still one slot per tick


def test_the_lead_comes_back_down_once_the_host_is_quiet_again() -> None:
    loop = EpollLoop(0.0, wake_latency=0.003)
    clock = AudioClock(loop, sleep=loop.sleep)  # type: ignore[arg-type]
    clock.add(lambda now: None)
    clock.start()
    for _ in range(100):
        loop.run_next()
    assert clock.lead > 3e-3
    loop.wake_latency = 30e-6
    for _ in range(3000):  # a minute of quiet ticks
        loop.run_next()
    assert clock.lead < 1.5e-3


def test_lead_must_leave_room_in_the_interval() -> None:
    with pytest.raises(ValueError, match="lead"):
        AudioClock(lead=0.015)
    with pytest.raises(ValueError, match="max_lead"):
        AudioClock(lead=0.002, max_lead=0.001)


def test_a_timer_late_because_the_loop_was_busy_does_not_lengthen_the_lead() -> None:
    # The loop's thread spends the time up to the timer and past it on other callbacks (a
    # burst of SIP): the timer runs 3 ms late, but a longer lead would not have helped, and
    # every tick would then sleep (blocking the loop) for longer.
    loop = EpollLoop(0.0)
    cpu = [0.0]
    clock = AudioClock(loop, sleep=loop.sleep, cpu_clock=lambda: cpu[0])  # type: ignore[arg-type]
    clock.add(lambda now: None)
    clock.start()
    for _ in range(100):
        timer = loop.pending
        assert timer is not None
        busy_until = timer.fire_at + 0.003
        cpu[0] += busy_until - loop.t  # on the CPU the whole while
        loop.t = busy_until
        loop.run_next()
    assert clock.lead == clock.min_lead


def test_the_log_names_the_ticks_scheduling() -> None:
    import subprocess
    import sys

    from gateway.runtime.clock import scheduling_summary

    assert scheduling_summary().startswith("normal scheduling")  # pytest is not real-time
    probe = subprocess.run(
        ["chrt", "--rr", "10", sys.executable, "-c",
         "from gateway.runtime.clock import scheduling_summary as s; print(s())"],
        capture_output=True, text=True, check=False)
    if probe.returncode == 0:  # as root (CI): the policy the unit gives is named
        assert probe.stdout.strip() == "SCHED_RR priority 10"
    else:
        assert "Operation not permitted" in probe.stderr
