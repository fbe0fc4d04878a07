"""The 20 ms audio tick for the whole gateway, on the asyncio loop.

Every deadline comes from the anchored schedule (`t0 + n * 0.020`) and is armed with
`loop.call_at`, never as "sleep 20 ms after the last one", so a slow tick makes the next one
come sooner instead of pushing every later tick back. If the loop stalls for longer than a
short burst, the missed ticks are skipped and counted rather than run back to back.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from gateway.media.session import PacingSchedule

log = logging.getLogger("branchline.clock")

TickCallback = Callable[[float], None]


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
    ) -> None:
        self._loop = loop
        self.interval = interval
        self.max_burst = max_burst
        self._callbacks: list[TickCallback] = []
        self._schedule: PacingSchedule | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
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
        """Where a new RTP stream should anchor its send schedule: half a slot before a tick.

        A stream anchored at an arbitrary phase sometimes finds 0 and then 2 packets due at
        consecutive ticks, because tick jitter decides which side of its slot boundary a
        tick lands on. Half a slot of margin on the clock's own grid gives exactly one.
        """
        schedule = self._schedule
        if schedule is None:
            return now
        k = math.floor((now - schedule.start) / self.interval)
        return schedule.start + k * self.interval - self.interval / 2

    def stop(self) -> None:
        """Cancel the pending tick; callbacks stay registered for a later start()."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._schedule = None

    def _arm(self) -> None:
        assert self._schedule is not None and self._loop is not None
        self._armed_for = self._schedule.next_deadline()
        self._handle = self._loop.call_at(self._armed_for, self._tick)

    def _tick(self) -> None:
        self._handle = None
        schedule = self._schedule
        if schedule is None or self._loop is None:
            return
        now = self._loop.time()
        # asyncio may fire a timer up to its clock resolution early: the slot still counts
        slots = schedule.due(max(now, self._armed_for))
        self.skipped += schedule.last_skipped
        if slots > 1:
            self.late += slots - 1
        first = schedule.slot - slots
        for i in range(slots):
            # Catch-up slots carry their own deadline as `now`, so a stream that gets one
            # frame per call also sends one packet per call; the newest slot gets the loop time.
            slot_now = now if i == slots - 1 else schedule.slot_time(first + i)
            self.ticks += 1
            for callback in tuple(self._callbacks):
                try:
                    callback(slot_now)
                except Exception:
                    self.errors += 1
                    log.exception("audio tick callback %r failed", callback)
        if self._schedule is schedule:  # a callback may have stopped the clock
            self._arm()
