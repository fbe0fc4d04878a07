"""The 20 ms audio tick for the whole gateway, on the asyncio loop.

Every deadline comes from the anchored schedule (`t0 + n * 0.020`), never as "sleep 20 ms
after the last one", so a slow tick makes the next one come sooner instead of pushing every
later tick back. If the loop stalls for longer than a short burst, the missed ticks are
skipped and counted rather than run back to back.

Landing on the deadline: asyncio waits in epoll, whose timeout is whole milliseconds rounded
up, so a timer armed for the deadline itself runs 0-1 ms late (plus scheduler noise), and the
RTP every tick sends inherits that jitter. The timer is therefore armed `lead` before the
deadline, and a tick that wakes early finishes with a short blocking sleep to the deadline
(`time.sleep` has ~60 us slack, epoll 1 ms). No CPU is spent in that sleep; the loop is
blocked for it, about `lead` minus half a millisecond per 20 ms tick on average.

The lead adapts: it is the largest overshoot of the timer in the last 10 s (how late epoll
woke past the time asked for, counted only when the loop's thread was off the CPU rather
than busy with other callbacks) plus a margin, between `lead` (1.2 ms) and
`max_lead` (4 ms). On a quiet board the wake is 0-1 ms late and the lead stays near 1.2 ms;
on a loaded 2-core VM (the media bench at 8 calls) epoll woke up to 2 ms late on 40 % of the
ticks, and a fixed 1.2 ms lead let those ticks start 0.5-1 ms after their deadline. Most
of that was CPython's own rounding of the epoll timeout, which added a whole millisecond to
waits of 9, 13 or 18 ms; the daemon's loop now runs on `gateway/runtime/selector.py`, which
removes it, and the adaptive lead is left with scheduler noise (mean 1.27 ms against 2.22).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from gateway.media.session import PacingSchedule

log = logging.getLogger("branchline.clock")

TickCallback = Callable[[float], None]
ANCHOR_MARGIN = 1e-6  # seconds a stream's slots lead the clock's ticks (float rounding only)
LEAD = 0.0012  # seconds the timer is armed before each deadline (epoll rounds up to 1 ms)
MAX_LEAD = 0.004  # the most the lead grows to when the timer keeps waking late
LEAD_MARGIN = 0.0003  # lead = recent worst overshoot + this
LEAD_WINDOW = 10  # the lead covers the worst overshoot of the last 10 s (in 1 s buckets)


def scheduling_summary() -> str:
    """How the kernel schedules this thread (the one that runs the tick), for the log."""
    import os

    policy = os.sched_getscheduler(0)
    if policy in (os.SCHED_RR, os.SCHED_FIFO):
        name = "SCHED_RR" if policy == os.SCHED_RR else "SCHED_FIFO"
        return f"{name} priority {os.sched_getparam(0).sched_priority}"
    return ("normal scheduling (the unit runs it SCHED_RR 10: without it, RTP pacing suffers "
            "when other processes load the cores)")


class AudioClock:
    """Runs registered callbacks once per 20 ms slot with `now = loop.time()`.

    After a short stall the missed slots are run back to back; each of those catch-up calls
    gets its slot's deadline as `now` (never later than the loop time), so per-tick work
    such as "push one frame, send what is due" stays one frame per packet.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        interval: float = 0.020,
        max_burst: int = 5,
        lead: float = LEAD,
        max_lead: float = MAX_LEAD,
        sleep: Callable[[float], None] = time.sleep,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not 0 <= lead < interval / 2:
            raise ValueError(f"clock lead must be 0 <= lead < interval/2, got {lead}")
        if not lead <= max_lead < interval / 2:
            raise ValueError(f"clock max_lead must be lead <= max_lead < interval/2, got "
                             f"{max_lead}")
        self._loop = loop
        self.interval = interval
        self.max_burst = max_burst
        self.min_lead = lead
        self.max_lead = max_lead
        self.lead = lead  # the lead in use: min_lead .. max_lead, from the overshoot seen
        self.overshoot_peak = 0.0  # worst lateness of the timer past its armed time, last 10 s
        self._second_peak = 0.0  # the worst in the bucket being filled
        self._second_ticks = 0
        self._peaks: deque[float] = deque(maxlen=LEAD_WINDOW)  # one per earlier second
        self._sleep = sleep
        self._cpu_clock = cpu_clock
        self._armed_at = 0.0  # loop time when the timer was armed
        self._armed_cpu = 0.0  # the loop thread's CPU time then
        self._callbacks: list[TickCallback] = []
        self._schedule: PacingSchedule | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        self._armed_lead = lead
        self.ticks = 0  # slots run
        self.late = 0  # slots run later than their own deadline's slot (caught up)
        self.skipped = 0  # slots dropped after a stall
        self.errors = 0  # callback exceptions logged and survived

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._schedule is not None

    def add(self, callback: TickCallback) -> None:
        """Run `callback(now)` on every tick from the next one on."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def remove(self, callback: TickCallback) -> None:
        """Stop calling `callback`; unknown callbacks are ignored."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def start(self) -> None:
        """Anchor the schedule at the loop's current time and run the first tick at once."""
        if self._schedule is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._schedule = PacingSchedule(
            self._loop.time(), self.interval, max_burst=self.max_burst
        )
        self._arm()

    def stream_anchor(self, now: float) -> float:
        """Where a new RTP stream should anchor its send schedule: on the clock's next tick.

        The stream's slot n is then due exactly at tick n from now, and since every tick
        hands its callbacks a `now` no earlier than its own deadline, each tick finds exactly
        one slot due, the first one included. An anchor at an arbitrary phase would let tick
        jitter decide which side of a slot boundary a tick lands on (0 then 2 packets); an
        anchor before the next tick would make that tick find two slots due.
        """
        schedule = self._schedule
        if schedule is None:
            return now
        # the next slot not yet run, or a later one when the loop is behind its own ticks
        k = math.ceil((now - schedule.start) / self.interval - 1e-6)
        # A microsecond early, so float rounding of `start + n * interval` on the stream's
        # side can never put its slot a hair after the tick that should send it.
        return schedule.slot_time(max(k, schedule.slot)) - ANCHOR_MARGIN

    def stop(self) -> None:
        """Cancel the pending tick; callbacks stay registered for a later start()."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._schedule = None

    def _arm(self) -> None:
        assert self._schedule is not None and self._loop is not None
        self._armed_for = self._schedule.next_deadline()
        self._armed_lead = self.lead
        self._armed_at = self._loop.time()
        self._armed_cpu = self._cpu_clock()
        self._handle = self._loop.call_at(self._armed_for - self.lead, self._tick)

    def _tick(self) -> None:
        self._handle = None
        schedule = self._schedule
        if schedule is None or self._loop is None:
            return
        now = self._loop.time()
        # how late the timer came past the time it was armed for (epoll, scheduler, a busy
        # loop): the lead for the next tick covers the worst of it seen lately
        overshoot = now - (self._armed_for - self._armed_lead)
        # Only a late wake counts: the thread was off the CPU (waiting in epoll, or not
        # scheduled) for longer than the overshoot. A timer late because the loop was busy
        # with other work (a burst of SIP) would only make every tick's sleep longer, and
        # the loop is blocked in that sleep.
        busy = self._cpu_clock() - self._armed_cpu
        if busy + overshoot < now - self._armed_at:
            self._second_peak = max(self._second_peak, overshoot)
        self._second_ticks += 1
        if self._second_ticks * self.interval >= 1.0:
            self._peaks.append(self._second_peak)
            self._second_peak = 0.0
            self._second_ticks = 0
        self.overshoot_peak = max(self._second_peak, max(self._peaks, default=0.0))
        self.lead = min(self.max_lead, max(self.min_lead, self.overshoot_peak + LEAD_MARGIN))
        wait = self._armed_for - now
        if wait > 0:
            # woke before the deadline (as armed): the last stretch in a precise sleep
            self._sleep(min(wait, self._armed_lead))
            now = self._loop.time()
        # a sleep or timer may still end a hair early: the slot still counts
        slots = schedule.due(max(now, self._armed_for))
        self.skipped += schedule.last_skipped
        if slots > 1:
            self.late += slots - 1
        first = schedule.slot - slots
        for i in range(slots):
            # Catch-up slots carry their own deadline as `now`, so a stream that gets one
            # frame per call also sends one packet per call; the newest slot gets the loop time.
            # A timer that fired a hair early still hands out its own deadline or later.
            slot_now = (max(now, schedule.slot_time(first + i)) if i == slots - 1
                        else schedule.slot_time(first + i))
            self.ticks += 1
            for callback in tuple(self._callbacks):
                try:
                    callback(slot_now)
                except Exception:
                    self.errors += 1
                    log.exception("audio tick callback %r failed", callback)
        if self._schedule is schedule:  # a callback may have stopped the clock
            self._arm()
